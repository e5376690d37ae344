"""The deployment files: compose.yaml against the Compose specification's
JSON schema and the promises the README makes about it, the Dockerfile
through hadolint and its shape.

No Docker engine runs here: the files are validated, not run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from app import __main__ as entry
from app import embedded, serve

ROOT = Path(__file__).resolve().parents[1]
SECRET_NAMES = ("JWT_SECRET", "ADMIN_PASSWORD")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _compose_schema() -> dict[str, Any]:
    # check-jsonschema ships the Compose specification's schema.
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    schema = _compose_schema()

    jsonschema.validate(compose, schema)


def test_mongo_is_healthy_only_as_the_primary(compose: dict[str, Any]) -> None:
    script = compose["services"]["mongo"]["healthcheck"]["test"][-1]

    # mongosh exits 0 when a script does not throw, whatever it evaluates
    # to: the exit code must be set, and set only for a primary.
    assert "myState === 1 ? 0 : 1" in script
    assert script.rstrip().endswith("quit(code);")


def test_mongo_is_a_self_initiating_replica_set_on_a_named_volume(
    compose: dict[str, Any],
) -> None:
    mongo = compose["services"]["mongo"]

    assert re.fullmatch(r"mongo:\d+(\.\d+)*", mongo["image"])
    assert mongo["command"][mongo["command"].index("--replSet") + 1] == "rs0"
    assert "rs.initiate" in " ".join(mongo["healthcheck"]["test"])
    volume = mongo["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]


def test_registry_waits_for_mongo_and_runs_with_auth(
    compose: dict[str, Any],
) -> None:
    registry = compose["services"]["registry"]
    env = registry["environment"]

    assert registry["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert env["DEARDIARY_ENABLE_AUTH"] == "true"
    assert env["DEARDIARY_MONGO_URI"].endswith("replicaSet=rs0")
    assert registry["build"] == "."


def test_no_secret_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    registry = compose["services"]["registry"]
    env = registry["environment"]

    for name in SECRET_NAMES:
        assert f"DEARDIARY_{name}" not in env
        path = env[f"DEARDIARY_{name}_FILE"]
        secret = path.removeprefix("/run/secrets/")
        assert secret in registry["secrets"]
        assert set(compose["secrets"][secret]) == {"file"}


def test_compose_leaves_time_for_the_grace_period(compose: dict[str, Any]) -> None:
    registry = compose["services"]["registry"]

    grace = float(registry["environment"]["DEARDIARY_SHUTDOWN_GRACE_SECONDS"])
    assert float(registry["stop_grace_period"].removesuffix("s")) > grace


def test_dockerfile_lints_clean_with_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"

    done = subprocess.run(
        [str(hadolint), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_builds_in_two_stages_from_a_pinned_slim_python(
    dockerfile: list[str],
) -> None:
    bases = [line.split()[1] for line in dockerfile if line.startswith("FROM ")]

    assert len(bases) == 2
    assert all(re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", base) for base in bases)


def test_dockerfile_runs_as_a_non_root_user_with_a_health_check(
    dockerfile: list[str],
) -> None:
    final = dockerfile[max(i for i, x in enumerate(dockerfile) if x[:5] == "FROM ") :]
    [user] = [line for line in final if line.startswith("USER ")]
    [health] = [line for line in final if line.startswith("HEALTHCHECK ")]

    assert user.split()[1].split(":")[0] not in ("root", "0")
    assert "/health" in health
    assert "STOPSIGNAL SIGTERM" in final
    entrypoint = json.loads(final[-1].removeprefix("ENTRYPOINT "))
    assert entrypoint == ["python", "-m", "app"]  # exec form: PID 1 is python


def test_image_takes_only_the_files_it_needs() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]

    assert rules[0] == "*"
    assert {rule for rule in rules if rule.startswith("!")} == {
        "!pyproject.toml",
        "!README.md",
        "!app/",
        "!indexes/",
    }


def _image_environment(dockerfile: list[str]) -> dict[str, str]:
    final = dockerfile[max(i for i, x in enumerate(dockerfile) if x[:5] == "FROM ") :]
    pairs = [word for line in final if line[:4] == "ENV " for word in line.split()]
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def _no_listening(*args: object) -> None:
    raise AssertionError("the image's server went on to listen")


@pytest.mark.parametrize(
    ("added", "variable"),
    [
        # As pulled: auth is on and needs its secret.
        ({}, "DEARDIARY_JWT_SECRET"),
        # Auth off on every interface needs saying so explicitly.
        ({"DEARDIARY_ENABLE_AUTH": "false"}, "DEARDIARY_HOST"),
        # The image holds no embedded store: a MongoDB is required.
        ({"DEARDIARY_JWT_SECRET": "s" * 40}, "DEARDIARY_MONGO_URI"),
    ],
)
def test_the_image_refuses_to_start_without_what_it_needs(
    dockerfile: list[str],
    added: dict[str, str],
    variable: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    for key in [k for k in os.environ if k.startswith("DEARDIARY_")]:
        monkeypatch.delenv(key)
    for key, value in (_image_environment(dockerfile) | added).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DEARDIARY_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(embedded, "EXECUTABLE", "secantusd-not-in-the-image")
    monkeypatch.setattr(serve, "bind", _no_listening)
    monkeypatch.setattr(entry, "configure", lambda settings: None)

    code = entry.main()

    [line] = capsys.readouterr().err.splitlines()
    assert code == 2
    assert line.startswith(f"configuration error: {variable}: ")


def test_the_image_installs_no_embedded_store(dockerfile: list[str]) -> None:
    installs = [line for line in dockerfile if line.startswith("RUN pip ")]

    assert installs
    assert not any("embedded" in line or "SecantusDB" in line for line in installs)
