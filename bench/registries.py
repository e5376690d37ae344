"""The five operations, as each registry's HTTP API spells them.

``OurRegistry`` speaks this project's API, ``MlflowRegistry`` MLflow's REST
API 2.0. Both seed the same shapes (a run to register from, models with 20
versions), so one load loop drives the same work on both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from loadgen import Http, Request, RequestMaker, fire_together

OPERATIONS = (
    "create_model",
    "register_version",
    "get_version",
    "promote",
    "list_models",
)
LABELS = {
    "create_model": "create model",
    "register_version": "register a version (one model)",
    "get_version": "get a version",
    "promote": "promote to production, archiving others",
    "list_models": "list models, 50 per page",
}
FIXTURE_VERSIONS = 20
MAX_PAGES = 100  # bounds every walk over a paged list
# Our server's metrics worth reading around a loop, and the key of each.
COUNTED_METRICS = {
    "deardiary_mongo_command_duration_seconds_count": "command {command} {outcome}",
    "deardiary_transaction_retries_total": "retry {cause}",
}


@dataclass
class Workload:
    """The requests of one operation, and a check of what they left."""

    # make(prefix) builds the request maker of one loop; the prefix keeps
    # the names of the warm-up loop apart from the measured one's.
    make: Callable[[str], RequestMaker]
    verify: Callable[[], Awaitable[dict[str, Any]]] | None = None


def contiguity(numbers: list[int]) -> dict[str, Any]:
    """Whether version numbers are unique and run 1..N."""
    ordered = sorted(numbers)
    return {
        "versions": len(ordered),
        "unique": len(set(ordered)) == len(ordered),
        "contiguous": ordered == list(range(1, len(ordered) + 1)),
    }


class OurRegistry:
    """This project's HTTP API."""

    name = "ours"

    def __init__(self, http: Http, tag: str) -> None:
        self.http = http
        self.tag = tag
        self.project_id = 0
        self.experiment_id = 0
        self.iteration_id = 0
        self.resource_id = 0

    async def prepare(self) -> None:
        """A project with an experiment, an iteration and a small artifact."""
        project = await self._post("/project", {"name": f"bench-{self.tag}"})
        self.project_id = project["project_id"]
        experiment = await self._post(
            f"/experiment/project/{self.project_id}", {"name": "bench"}
        )
        self.experiment_id = experiment_id = experiment["experiment_id"]
        iteration = await self._post(f"/iteration/experiment/{experiment_id}", {})
        self.iteration_id = iteration["iteration_id"]
        self.resource_id = await self._upload_small(experiment_id)

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        return await self.http.ok(Request("POST", path, json=body))

    async def _upload_small(self, experiment_id: int) -> int:
        form = aiohttp.FormData()
        form.add_field("name", "weights.bin")
        form.add_field("file", b"\0" * 1024, filename="weights.bin")
        url = f"{self.http.base}/resource/experiment/{experiment_id}"
        async with self.http.session.post(url, data=form) as response:
            body = await response.json()
            if response.status != 201:
                raise RuntimeError(f"upload failed: {response.status} {body}")
        return int(body["resource_id"])

    def _registration(self) -> dict[str, int]:
        return {"iteration_id": self.iteration_id, "resource_id": self.resource_id}

    async def model(self, name: str, versions: int) -> tuple[int, list[int]]:
        """A new model with ``versions`` versions: its id and theirs."""
        created = await self._post(
            f"/model/project/{self.project_id}", {"name": f"{name}-{self.tag}"}
        )
        model_id = created["model_id"]
        ids = []
        for _ in range(versions):
            answer = await self._post(
                f"/modelversion/model/{model_id}", self._registration()
            )
            ids.append(answer["modelversion_id"])
        return model_id, ids

    async def workload(self, operation: str, concurrency: int) -> Workload:
        """The requests of ``operation``, with its fixture in place."""
        project = f"/model/project/{self.project_id}"
        if operation == "create_model":
            return Workload(
                lambda prefix: (
                    lambda i: Request(
                        "POST", project, json={"name": f"m-c{concurrency}-{prefix}{i}"}
                    )
                )
            )
        if operation == "register_version":
            model_id, _ = await self.model(f"reg-c{concurrency}", 0)
            body = self._registration()
            path = f"/modelversion/model/{model_id}"
            return Workload(
                lambda prefix: lambda i: Request("POST", path, json=body),
                lambda: self._check_versions(model_id),
            )
        if operation == "list_models":
            page = {"limit": "50", "offset": "0"}
            return Workload(lambda p: lambda i: Request("GET", project, params=page))

        _, ids = await self.model(f"{operation}-c{concurrency}", FIXTURE_VERSIONS)
        if operation == "get_version":
            return Workload(
                lambda p: lambda i: Request("GET", f"/modelversion/{ids[i % len(ids)]}")
            )
        if operation == "promote":
            return Workload(
                lambda p: (
                    lambda i: Request(
                        "PATCH",
                        f"/modelversion/{ids[i % len(ids)]}",
                        json={"stage_id": 3},
                    )
                )
            )
        raise ValueError(operation)

    async def _versions(self, model_id: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in range(MAX_PAGES):
            params = {"limit": "200", "offset": str(page * 200)}
            answer = await self.http.ok(
                Request("GET", f"/modelversion/model/{model_id}", params=params)
            )
            found.extend(answer["data"])
            if len(found) >= answer["total"]:
                break
        return found

    async def _check_versions(self, model_id: int) -> dict[str, Any]:
        versions = await self._versions(model_id)
        return contiguity([v["version"] for v in versions])

    async def counters(self) -> Counter[str]:
        """MongoDB commands and transaction retries so far, from /metrics;
        empty where the server has no metrics."""
        status, body = await self.http.call(Request("GET", "/metrics"))
        if status != 200:
            return Counter()
        return metric_counts(body.decode())

    async def race_round(self, versions: int, round_: int) -> dict[str, Any]:
        """Promote every version of a fresh model at once; count PRODUCTION."""
        model_id, ids = await self.model(f"race-{round_}", versions)
        statuses = await fire_together(
            self.http,
            [
                Request("PATCH", f"/modelversion/{id_}", json={"stage_id": 3})
                for id_ in ids
            ],
        )
        stages = Counter(v["stage_id"] for v in await self._versions(model_id))
        return _race_result(statuses, stages[3])


def metric_counts(exposition: str) -> Counter[str]:
    """Commands by name and outcome, and retries by cause, summed over the
    labels that do not matter here."""
    found: Counter[str] = Counter()
    for line in exposition.splitlines():
        name, _, rest = line.partition("{")
        if name not in COUNTED_METRICS:
            continue
        labels, _, value = rest.rpartition("} ")
        pairs = dict(pair.split("=", 1) for pair in labels.split(",") if "=" in pair)
        key = COUNTED_METRICS[name].format(
            **{k: v.strip('"') for k, v in pairs.items()}
        )
        found[key] += round(float(value))
    return found


class MlflowRegistry:
    """MLflow's model registry, REST API 2.0."""

    name = "mlflow"
    api = "/api/2.0/mlflow"

    def __init__(self, http: Http, tag: str) -> None:
        self.http = http
        self.tag = tag
        self.run_id = ""
        self.source = ""

    async def prepare(self) -> None:
        """An experiment with one run to register versions from."""
        experiment = await self._post("experiments/create", {"name": f"b-{self.tag}"})
        run = await self._post(
            "runs/create", {"experiment_id": experiment["experiment_id"]}
        )
        info = run["run"]["info"]
        self.run_id = info["run_id"]
        self.source = f"{info['artifact_uri']}/model"

    async def _post(self, endpoint: str, body: dict[str, Any]) -> Any:
        return await self.http.ok(Request("POST", f"{self.api}/{endpoint}", json=body))

    def _registration(self, name: str) -> dict[str, str]:
        return {"name": name, "source": self.source, "run_id": self.run_id}

    async def model(self, name: str, versions: int) -> str:
        """A new registered model with ``versions`` versions: its name."""
        name = f"{name}-{self.tag}"
        await self._post("registered-models/create", {"name": name})
        for _ in range(versions):
            await self._post("model-versions/create", self._registration(name))
        return name

    def _promotion(self, name: str, version: int) -> Request:
        body = {
            "name": name,
            "version": str(version),
            "stage": "Production",
            "archive_existing_versions": True,
        }
        return Request("POST", f"{self.api}/model-versions/transition-stage", json=body)

    async def workload(self, operation: str, concurrency: int) -> Workload:
        """The requests of ``operation``, with its fixture in place."""
        api = self.api
        if operation == "create_model":
            return Workload(
                lambda prefix: (
                    lambda i: Request(
                        "POST",
                        f"{api}/registered-models/create",
                        json={"name": f"m-{self.tag}-c{concurrency}-{prefix}{i}"},
                    )
                )
            )
        if operation == "register_version":
            name = await self.model(f"reg-c{concurrency}", 0)
            body = self._registration(name)
            path = f"{api}/model-versions/create"
            return Workload(
                lambda prefix: lambda i: Request("POST", path, json=body),
                lambda: self._check_versions(name),
            )
        if operation == "list_models":
            search = {"max_results": "50"}
            path = f"{api}/registered-models/search"
            return Workload(lambda p: lambda i: Request("GET", path, params=search))

        name = await self.model(f"{operation}-c{concurrency}", FIXTURE_VERSIONS)
        if operation == "get_version":
            return Workload(
                lambda p: (
                    lambda i: Request(
                        "GET",
                        f"{api}/model-versions/get",
                        params={"name": name, "version": str(i % FIXTURE_VERSIONS + 1)},
                    )
                )
            )
        if operation == "promote":
            return Workload(
                lambda p: lambda i: self._promotion(name, i % FIXTURE_VERSIONS + 1)
            )
        raise ValueError(operation)

    async def _versions(self, name: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = None
        for _ in range(MAX_PAGES):
            params = {"filter": f"name='{name}'", "max_results": "200"}
            if token:
                params["page_token"] = token
            answer = await self.http.ok(
                Request("GET", f"{self.api}/model-versions/search", params=params)
            )
            found.extend(answer.get("model_versions", []))
            token = answer.get("next_page_token")
            if not token:
                break
        return found

    async def _check_versions(self, name: str) -> dict[str, Any]:
        versions = await self._versions(name)
        return contiguity([int(v["version"]) for v in versions])

    async def counters(self) -> Counter[str]:
        """Nothing: MLflow's server has no such metrics."""
        return Counter()

    async def race_round(self, versions: int, round_: int) -> dict[str, Any]:
        """Promote every version of a fresh model at once; count Production."""
        name = await self.model(f"race-{round_}", versions)
        statuses = await fire_together(
            self.http,
            [self._promotion(name, v) for v in range(1, versions + 1)],
        )
        found = await self._versions(name)
        production = sum(v["current_stage"] == "Production" for v in found)
        return _race_result(statuses, production)


def _race_result(statuses: list[int | str], production: int) -> dict[str, Any]:
    return {
        "requests": len(statuses),
        "statuses": dict(Counter(str(s) for s in statuses)),
        "production_versions": production,
    }


Registry = OurRegistry | MlflowRegistry
