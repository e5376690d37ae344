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
import io
import os
import pickle
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sklearn import __version__ as VERSION
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

from app.client import Client, ClientError, Iteration, ModelVersion, Stage, connect

DEFAULT_URL = "http://127.0.0.1:9000"
PRODUCTION = Stage.PRODUCTION
ARCHIVED = Stage.ARCHIVED

# Two runs of one classifier; the second setting generalises far better.
SETTINGS = ({"C": 1.0, "gamma": 0.01}, {"C": 10.0, "gamma": 0.001})


class DemoError(Exception):
    """A step did not turn out as the registry promises."""


def say(line: str) -> None:
    """Report one step."""
    print(line, flush=True)


# Reading back what the demo made ------------------------------------------


async def get_version(client: Client, version_id: int) -> ModelVersion:
    """The model version, which the demo has just made."""
    version = await client.get_modelversion(version_id)
    if version is None:
        raise DemoError(f"model version {version_id} is missing")
    return version


async def get_iteration(client: Client, iteration_id: int) -> Iteration:
    """The iteration, which the demo has just made."""
    iteration = await client.get_iteration(iteration_id)
    if iteration is None:
        raise DemoError(f"iteration {iteration_id} is missing")
    return iteration


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


async def set_up(client: Client) -> tuple[int, int, int]:
    """A fresh project with an experiment and a model; their ids."""
    await client.health()
    say(f"registry at {client.url} is up")

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    project_id = await client.create_project(f"digits-demo-{stamp}")
    say(f"created project {project_id} 'digits-demo-{stamp}'")

    experiment_id = await client.create_experiment(project_id, "svc-sweep")
    say(f"created experiment {experiment_id} 'svc-sweep'")

    model_id = await client.create_model(project_id, "digits-classifier")
    say(f"created model {model_id} 'digits-classifier'")
    return project_id, experiment_id, model_id


async def train_run(
    client: Client,
    experiment_id: int,
    data: Digits,
    number: int,
    workdir: Path,
) -> Run:
    """Train one setting as an iteration and upload the fitted model.

    The iteration is marked SUCCEEDED only once its model is stored; an
    error on the way marks it FAILED with the error's text.
    """
    setting = SETTINGS[number - 1]
    async with client.iteration(experiment_id) as iteration:
        classifier, accuracy = await asyncio.to_thread(fit, data, setting)
        notes = f"{describe(setting)} accuracy={accuracy!r}"
        await client.update_iteration(iteration.id, notes=notes)

        file = workdir / f"digits-svc-run{number}.pkl"
        file.write_bytes(pickle.dumps(classifier))
        description = f"{describe(setting)}, pickled by scikit-learn {VERSION}"
        resource_id = await client.create_resource(
            experiment_id, file.name, file, description=description
        )

    say(
        f"run {number}: iteration {iteration.id} trained {describe(setting)}, "
        f"held-out accuracy {accuracy:.4f}, marked SUCCEEDED"
    )
    say(
        f"run {number}: uploaded resource {resource_id} '{file.name}' "
        f"({file.stat().st_size} bytes)"
    )
    return Run(number, iteration.id, accuracy, resource_id)


async def register(client: Client, model_id: int, run: Run) -> int:
    """Register a model version from a run; the version's id."""
    version_id = await client.create_modelversion(
        model_id, run.iteration_id, run.resource_id
    )
    version = await get_version(client, version_id)
    say(
        f"registered version {version.version} (id {version_id}) from "
        f"iteration {run.iteration_id} with resource {run.resource_id}"
    )
    return version_id


async def promote(client: Client, version_id: int) -> None:
    """Put a version into production and show what became of the others."""
    await client.update_modelversion(version_id, Stage.PRODUCTION)

    version = await get_version(client, version_id)
    others = await client.get_modelversions(version.model_id)
    stages = ", ".join(f"v{v.version} {v.stage_id.name}" for v in others)
    say(f"promoted version {version.version} to PRODUCTION: {stages}")


async def expect_stage(client: Client, version_id: int, stage: Stage) -> None:
    """Fail unless the version is at the stage."""
    version = await get_version(client, version_id)
    if version.stage_id != stage:
        raise DemoError(
            f"version {version.version} is {version.stage_id.name}, "
            f"expected {stage.name}"
        )


async def production_version(client: Client, model_id: int) -> ModelVersion:
    """The model's one PRODUCTION version, found in its version list."""
    versions = await client.get_modelversions(model_id)
    live = [v for v in versions if v.stage_id == Stage.PRODUCTION]
    if len(live) != 1:
        raise DemoError(f"model {model_id} has {len(live)} PRODUCTION versions")

    version = live[0]
    say(
        f"production version of model {model_id} is version "
        f"{version.version} (id {version.id}), resource "
        f"{version.resource_id}, iteration {version.iteration_id}"
    )
    return version


def run_of(version: ModelVersion, runs: list[Run]) -> Run:
    """The run a version was registered from."""
    for run in runs:
        if run.iteration_id == version.iteration_id:
            return run
    raise DemoError(f"iteration {version.iteration_id} is no run of the demo")


async def fetch_model(client: Client, resource_id: int | None) -> Any:
    """Download a pickled model, check its sha256, and load it."""
    if resource_id is None:
        raise DemoError("the production version has no resource")
    record = await client.get_resource(resource_id)
    if record is None:
        raise DemoError(f"resource {resource_id} is missing")

    # The client checks the bytes against the server's sha256 as they come.
    buffer = io.BytesIO()
    digest = await client.download_resource(resource_id, buffer)
    data = buffer.getvalue()
    if digest != record.content_hash:
        raise DemoError(
            f"resource {resource_id}: sha256 {digest} does not match "
            f"content_hash {record.content_hash}"
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
    client: Client, classifier: Any, data: Digits, run: Run
) -> float:
    """Measure the served model again; fail unless it matches its run."""
    accuracy = await asyncio.to_thread(score, classifier, data)
    iteration = await get_iteration(client, run.iteration_id)
    if accuracy != run.accuracy:
        raise DemoError(
            f"reloaded model scores {accuracy!r}, but run {run.number} "
            f"measured {run.accuracy!r}"
        )

    say(
        f"reloaded model: held-out accuracy {accuracy:.4f}, the same as "
        f"iteration {run.iteration_id} recorded ({iteration.notes})"
    )
    return accuracy


async def run_demo(url: str) -> Outcome:
    """Run every step against the registry at ``url``."""
    data = load_digits_split()
    async with connect(url) as client:
        project_id, experiment_id, model_id = await set_up(client)

        with tempfile.TemporaryDirectory(prefix="deardiary-demo-") as tmp:
            workdir = Path(tmp)
            runs = [
                await train_run(client, experiment_id, data, n, workdir) for n in (1, 2)
            ]
        version_ids = [await register(client, model_id, run) for run in runs]

        await promote(client, version_ids[0])
        await promote(client, version_ids[1])
        await expect_stage(client, version_ids[0], Stage.ARCHIVED)

        live = await production_version(client, model_id)
        run = run_of(live, runs)
        classifier = await fetch_model(client, live.resource_id)
        accuracy = await check_accuracy(client, classifier, data, run)

    say("demo finished: every step behaved as the registry promises")
    return Outcome(project_id, model_id, live.id, accuracy)


async def run_or_explain(url: str) -> int:
    """Run the demo; 0, or 1 after one line on stderr saying what failed."""
    try:
        await run_demo(url)
    except DemoError as exc:
        return _failed(str(exc))
    except ClientError as exc:
        if exc.status == 0:  # no answer at all
            return _failed(f"cannot talk to the registry at {url}: {exc.message}")
        return _failed(str(exc))
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
