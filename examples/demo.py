"""The registry end to end, as a training script would use it.

Trains a scikit-learn classifier on the digits data set twice, with two
settings, and records each run as an iteration. Each fitted model is pickled
and uploaded as a resource, and a model version is registered from each run.
Version 1 goes to production, then version 2, which archives version 1.
Finally the script asks which version is in production, downloads its bytes,
checks them against the recorded sha256 and measures the model again.

    python examples/demo.py [--url http://127.0.0.1:9000]

The URL defaults to ``$DEARDIARY_URL``, then to http://127.0.0.1:9000.
Exits 1 with one line on stderr if any step fails.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import pickle
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from sklearn import __version__ as VERSION
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

DEFAULT_URL = "http://127.0.0.1:9000"
SUCCEEDED = 2
STAGES = {1: "NO_STAGE", 2: "STAGING", 3: "PRODUCTION", 4: "ARCHIVED"}
PRODUCTION = 3
ARCHIVED = 4

Json = dict[str, Any]

# Two runs of one classifier; the second setting generalises far better.
SETTINGS = ({"C": 1.0, "gamma": 0.01}, {"C": 10.0, "gamma": 0.001})


class DemoError(Exception):
    """A step did not turn out as the registry promises."""


def say(line: str) -> None:
    """Report one step."""
    print(line, flush=True)


# The registry over HTTP ---------------------------------------------------
# One method per call, named as the registry's client names them, so that a
# typed client can take this class's place.


class Registry:
    """The few registry calls the demo makes, over plain HTTP."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self._http = http
        self.url = url.rstrip("/")

    async def health(self) -> None:
        """Fail unless the server answers its liveness route."""
        await self._call("GET", "/health")

    async def create_project(self, name: str) -> int:
        """Create a project; its id."""
        return await self._create("/project", "project_id", json={"name": name})

    async def create_experiment(self, project_id: int, name: str) -> int:
        """Create an experiment in a project; its id."""
        path = f"/experiment/project/{project_id}"
        return await self._create(path, "experiment_id", json={"name": name})

    async def create_model(self, project_id: int, name: str) -> int:
        """Create a model in a project; its id."""
        path = f"/model/project/{project_id}"
        return await self._create(path, "model_id", json={"name": name})

    async def create_iteration(self, experiment_id: int) -> int:
        """Start a run (status RUNNING) in an experiment; its id."""
        path = f"/iteration/experiment/{experiment_id}"
        return await self._create(path, "iteration_id", json={})

    async def finish_iteration(self, iteration_id: int, notes: str) -> None:
        """Mark a run SUCCEEDED with notes."""
        body = {"status_id": SUCCEEDED, "notes": notes}
        await self._call("PATCH", f"/iteration/{iteration_id}", json=body)

    async def get_iteration(self, iteration_id: int) -> Json:
        """The iteration record."""
        return await self._call("GET", f"/iteration/{iteration_id}")

    async def upload_resource(
        self, experiment_id: int, name: str, description: str, file: Path
    ) -> int:
        """Upload a file as a resource of an experiment; its id."""
        with file.open("rb") as stream:
            form = aiohttp.FormData()
            form.add_field("name", name)
            form.add_field("description", description)
            # The file part goes last: the server checks the text first.
            form.add_field("file", stream, filename=file.name)
            path = f"/resource/experiment/{experiment_id}"
            return await self._create(path, "resource_id", data=form)

    async def get_resource(self, resource_id: int) -> Json:
        """The resource record (name, size, content_hash)."""
        return await self._call("GET", f"/resource/{resource_id}")

    async def download_resource(self, resource_id: int) -> bytes:
        """The resource's bytes."""
        url = f"{self.url}/resource/{resource_id}/data"
        async with self._http.get(url) as response:
            await _raise_for_error(response)
            return await response.read()

    async def create_modelversion(
        self, model_id: int, iteration_id: int, resource_id: int
    ) -> int:
        """Register a version of a model from a run; its id."""
        body = {"iteration_id": iteration_id, "resource_id": resource_id}
        path = f"/modelversion/model/{model_id}"
        return await self._create(path, "modelversion_id", json=body)

    async def get_modelversion(self, version_id: int) -> Json:
        """The model version record."""
        return await self._call("GET", f"/modelversion/{version_id}")

    async def get_modelversions(self, model_id: int) -> list[Json]:
        """Every version of a model, by version number."""
        page = await self._call("GET", f"/modelversion/model/{model_id}")
        return list(page["data"])

    async def update_stage(self, version_id: int, stage_id: int) -> None:
        """Move a model version to a stage."""
        body = {"stage_id": stage_id}
        await self._call("PATCH", f"/modelversion/{version_id}", json=body)

    async def _create(self, path: str, key: str, **body: Any) -> int:
        answer = await self._call("POST", path, **body)
        return int(answer[key])

    async def _call(self, method: str, path: str, **kwargs: Any) -> Json:
        url = self.url + path
        async with self._http.request(method, url, **kwargs) as response:
            await _raise_for_error(response)
            answer: Json = await response.json()
            return answer


async def _raise_for_error(response: aiohttp.ClientResponse) -> None:
    if response.status < 400:
        return
    try:
        error = await response.json()
        detail = f"{error['code']}: {error['message']}"
    except (aiohttp.ContentTypeError, ValueError, KeyError, TypeError):
        detail = (await response.text())[:200]
    request = f"{response.method} {response.url.path}"
    raise DemoError(f"{request} answered {response.status} {detail}")


# Training -----------------------------------------------------------------


@dataclass(frozen=True)
class Digits:
    """The digits data set, split once into training and held-out parts."""

    x_train: Any
    x_test: Any
    y_train: Any
    y_test: Any


@dataclass(frozen=True)
class Run:
    """One finished training run and where the registry keeps it."""

    number: int
    iteration_id: int
    accuracy: float
    resource_id: int


@dataclass(frozen=True)
class Outcome:
    """What the demo left in the registry."""

    project_id: int
    model_id: int
    production_version_id: int
    accuracy: float


def load_digits_split() -> Digits:
    """The data set that ships with scikit-learn, a quarter held out."""
    x, y = load_digits(return_X_y=True)
    parts = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    x_train, x_test, y_train, y_test = parts
    return Digits(x_train, x_test, y_train, y_test)


def fit(data: Digits, setting: dict[str, float]) -> tuple[SVC, float]:
    """Train a classifier; it and its accuracy on the held-out part."""
    classifier = SVC(**setting).fit(data.x_train, data.y_train)
    return classifier, score(classifier, data)


def score(classifier: Any, data: Digits) -> float:
    """Accuracy on the held-out part."""
    return float(accuracy_score(data.y_test, classifier.predict(data.x_test)))


def describe(setting: dict[str, float]) -> str:
    """The classifier and its hyperparameters, as one short text."""
    return "SVC(" + ", ".join(f"{k}={v}" for k, v in setting.items()) + ")"


# The story ----------------------------------------------------------------


async def set_up(registry: Registry) -> tuple[int, int, int]:
    """A fresh project with an experiment and a model; their ids."""
    await registry.health()
    say(f"registry at {registry.url} is up")

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    project_id = await registry.create_project(f"digits-demo-{stamp}")
    say(f"created project {project_id} 'digits-demo-{stamp}'")

    experiment_id = await registry.create_experiment(project_id, "svc-sweep")
    say(f"created experiment {experiment_id} 'svc-sweep'")

    model_id = await registry.create_model(project_id, "digits-classifier")
    say(f"created model {model_id} 'digits-classifier'")
    return project_id, experiment_id, model_id


async def train_run(
    registry: Registry,
    experiment_id: int,
    data: Digits,
    number: int,
    workdir: Path,
) -> Run:
    """Train one setting as an iteration and upload the fitted model."""
    setting = SETTINGS[number - 1]
    iteration_id = await registry.create_iteration(experiment_id)
    classifier, accuracy = await asyncio.to_thread(fit, data, setting)

    notes = f"{describe(setting)} accuracy={accuracy!r}"
    await registry.finish_iteration(iteration_id, notes)
    say(
        f"run {number}: iteration {iteration_id} trained {describe(setting)}, "
        f"held-out accuracy {accuracy:.4f}, marked SUCCEEDED"
    )

    file = workdir / f"digits-svc-run{number}.pkl"
    file.write_bytes(pickle.dumps(classifier))
    description = f"{describe(setting)}, pickled by scikit-learn {VERSION}"
    resource_id = await registry.upload_resource(
        experiment_id, file.name, description, file
    )
    say(
        f"run {number}: uploaded resource {resource_id} '{file.name}' "
        f"({file.stat().st_size} bytes)"
    )
    return Run(number, iteration_id, accuracy, resource_id)


async def register(registry: Registry, model_id: int, run: Run) -> int:
    """Register a model version from a run; the version's id."""
    version_id = await registry.create_modelversion(
        model_id, run.iteration_id, run.resource_id
    )
    version = await registry.get_modelversion(version_id)
    say(
        f"registered version {version['version']} (id {version_id}) from "
        f"iteration {run.iteration_id} with resource {run.resource_id}"
    )
    return version_id


async def promote(registry: Registry, version_id: int) -> None:
    """Put a version into production and show what became of the others."""
    await registry.update_stage(version_id, PRODUCTION)

    version = await registry.get_modelversion(version_id)
    others = await registry.get_modelversions(version["model_id"])
    stages = ", ".join(f"v{v['version']} {STAGES[v['stage_id']]}" for v in others)
    say(f"promoted version {version['version']} to PRODUCTION: {stages}")


async def expect_stage(registry: Registry, version_id: int, stage_id: int) -> None:
    """Fail unless the version is at the stage."""
    version = await registry.get_modelversion(version_id)
    if version["stage_id"] != stage_id:
        raise DemoError(
            f"version {version['version']} is {STAGES[version['stage_id']]}, "
            f"expected {STAGES[stage_id]}"
        )


async def production_version(registry: Registry, model_id: int) -> Json:
    """The model's one PRODUCTION version, found in its version list."""
    versions = await registry.get_modelversions(model_id)
    live = [v for v in versions if v["stage_id"] == PRODUCTION]
    if len(live) != 1:
        raise DemoError(f"model {model_id} has {len(live)} PRODUCTION versions")

    version = live[0]
    say(
        f"production version of model {model_id} is version "
        f"{version['version']} (id {version['id']}), resource "
        f"{version['resource_id']}, iteration {version['iteration_id']}"
    )
    return version


def run_of(version: Json, runs: list[Run]) -> Run:
    """The run a version was registered from."""
    for run in runs:
        if run.iteration_id == version["iteration_id"]:
            return run
    raise DemoError(f"iteration {version['iteration_id']} is no run of the demo")


async def fetch_model(registry: Registry, resource_id: int) -> Any:
    """Download a pickled model, check its sha256, and load it."""
    record = await registry.get_resource(resource_id)
    data = await registry.download_resource(resource_id)

    digest = hashlib.sha256(data).hexdigest()
    if digest != record["content_hash"]:
        raise DemoError(
            f"resource {resource_id}: sha256 {digest} does not match "
            f"content_hash {record['content_hash']}"
        )
    say(
        f"downloaded {len(data)} bytes of resource {resource_id}; sha256 "
        f"{digest[:12]}... matches its content_hash"
    )

    # Unpickling runs code: load only bytes whose hash matches the record.
    try:
        return pickle.loads(data)
    except (pickle.UnpicklingError, EOFError, AttributeError) as exc:
        raise DemoError(f"resource {resource_id}: not a model: {exc}") from exc


async def check_accuracy(
    registry: Registry, classifier: Any, data: Digits, run: Run
) -> float:
    """Measure the served model again; fail unless it matches its run."""
    accuracy = await asyncio.to_thread(score, classifier, data)
    iteration = await registry.get_iteration(run.iteration_id)
    if accuracy != run.accuracy:
        raise DemoError(
            f"reloaded model scores {accuracy!r}, but run {run.number} "
            f"measured {run.accuracy!r}"
        )

    say(
        f"reloaded model: held-out accuracy {accuracy:.4f}, the same as "
        f"iteration {run.iteration_id} recorded ({iteration['notes']})"
    )
    return accuracy


async def run_demo(url: str) -> Outcome:
    """Run every step against the registry at ``url``."""
    data = load_digits_split()
    async with aiohttp.ClientSession() as http:
        registry = Registry(http, url)
        project_id, experiment_id, model_id = await set_up(registry)

        with tempfile.TemporaryDirectory(prefix="deardiary-demo-") as tmp:
            workdir = Path(tmp)
            runs = [
                await train_run(registry, experiment_id, data, n, workdir)
                for n in (1, 2)
            ]
        version_ids = [await register(registry, model_id, run) for run in runs]

        await promote(registry, version_ids[0])
        await promote(registry, version_ids[1])
        await expect_stage(registry, version_ids[0], ARCHIVED)

        live = await production_version(registry, model_id)
        run = run_of(live, runs)
        classifier = await fetch_model(registry, live["resource_id"])
        accuracy = await check_accuracy(registry, classifier, data, run)

    say("demo finished: every step behaved as the registry promises")
    return Outcome(project_id, model_id, live["id"], accuracy)


async def run_or_explain(url: str) -> int:
    """Run the demo; 0, or 1 after one line on stderr saying what failed."""
    try:
        await run_demo(url)
    except DemoError as exc:
        return _failed(str(exc))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _failed(f"cannot talk to the registry at {url}: {exc}")
    return 0


def _failed(reason: str) -> int:
    print(f"demo failed: {reason}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run the demo against the registry named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("DEARDIARY_URL", DEFAULT_URL),
        help="registry base URL (default: $DEARDIARY_URL or %(default)s)",
    )
    url = parser.parse_args(argv).url
    return asyncio.run(run_or_explain(url))


if __name__ == "__main__":
    sys.exit(main())
