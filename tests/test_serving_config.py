"""Serving settings: workers, grace and deadline, secrets from files, and
the one-line exit with code 2 for a bad value."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from app.settings import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s" * 40


def _refused(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    return caught.value


def test_default_is_one_worker_per_usable_core() -> None:
    settings = load_settings(
        {"DEARDIARY_MONGO_URI": "mongodb://db:27017/?replicaSet=rs0"}
    )

    assert settings.workers is None
    assert settings.worker_count == len(os.sched_getaffinity(0))
    assert settings.shutdown_grace_seconds == 30
    assert settings.request_timeout_seconds == 15


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 1), (8, 7)])
def test_the_embedded_store_keeps_a_core_of_its_own(
    cores: int, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False
    )

    assert load_settings({}).worker_count == workers
    uri = {"DEARDIARY_MONGO_URI": "mongodb://db:27017/?replicaSet=rs0"}
    assert load_settings(uri).worker_count == cores
    assert load_settings({"DEARDIARY_WORKERS": "2"}).worker_count == 2


def test_serving_values_are_read_into_their_types() -> None:
    settings = load_settings(
        {
            "DEARDIARY_WORKERS": "4",
            "DEARDIARY_SHUTDOWN_GRACE_SECONDS": "2.5",
            "DEARDIARY_REQUEST_TIMEOUT_SECONDS": "8",
        }
    )

    assert settings.worker_count == 4
    assert settings.shutdown_grace_seconds == 2.5
    assert settings.request_timeout_seconds == 8


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEARDIARY_WORKERS", "0"),
        ("DEARDIARY_WORKERS", "many"),
        ("DEARDIARY_SHUTDOWN_GRACE_SECONDS", "-1"),
        ("DEARDIARY_REQUEST_TIMEOUT_SECONDS", "0"),
        ("DEARDIARY_REQUEST_TIMEOUT_SECONDS", "nan"),
        ("DEARDIARY_PORT", "70000"),
        ("DEARDIARY_LOG_FORMAT", "xml"),
    ],
)
def test_a_bad_serving_value_names_its_variable(variable: str, value: str) -> None:
    error = _refused({variable: value})

    assert error.variable == variable


def test_secrets_are_read_from_files(tmp_path: Path) -> None:
    (tmp_path / "jwt").write_text(SECRET + "\n")
    (tmp_path / "admin").write_text("admin password 1\r\n")

    settings = load_settings(
        {
            "DEARDIARY_ENABLE_AUTH": "true",
            "DEARDIARY_JWT_SECRET_FILE": str(tmp_path / "jwt"),
            "DEARDIARY_ADMIN_PASSWORD_FILE": str(tmp_path / "admin"),
        }
    )

    assert settings.jwt_secret == SECRET
    assert settings.admin_password == "admin password 1"


def test_a_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "jwt").write_text(SECRET)

    error = _refused(
        {
            "DEARDIARY_JWT_SECRET": SECRET,
            "DEARDIARY_JWT_SECRET_FILE": str(tmp_path / "jwt"),
        }
    )

    assert error.variable == "DEARDIARY_JWT_SECRET_FILE"
    assert "not both" in str(error)


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_a_missing_or_empty_secret_file_is_refused(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "admin"
    if content is not None:
        path.write_text(content)

    error = _refused({"DEARDIARY_ADMIN_PASSWORD_FILE": str(path)})

    assert error.variable == "DEARDIARY_ADMIN_PASSWORD_FILE"
    assert str(path) in str(error)


def test_a_short_secret_from_a_file_names_the_file_variable_not_the_value(
    tmp_path: Path,
) -> None:
    (tmp_path / "jwt").write_text("too-short-secret")

    error = _refused(
        {
            "DEARDIARY_ENABLE_AUTH": "true",
            "DEARDIARY_JWT_SECRET_FILE": str(tmp_path / "jwt"),
        }
    )

    assert error.variable == "DEARDIARY_JWT_SECRET_FILE"
    assert "too-short-secret" not in str(error)


def test_settings_survive_the_trip_to_a_worker() -> None:
    settings = Settings(workers=3, jwt_secret=SECRET, data_dir=Path("/srv/data"))

    again = Settings.model_validate(settings.model_dump(mode="json"))

    assert again == settings


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEARDIARY_PORT", "70000"),
        ("DEARDIARY_LOG_FORMAT", "xml"),
        ("DEARDIARY_MONGO_URI", "mongodb://host:notaport/"),
        ("DEARDIARY_WORKERS", "0"),
        ("DEARDIARY_SHUTDOWN_GRACE_SECONDS", "soon"),
    ],
)
async def test_server_exits_2_with_one_line_naming_the_variable(
    variable: str, value: str, tmp_path: Path
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEARDIARY_")}
    environ |= {variable: value, "DEARDIARY_DATA_DIR": str(tmp_path)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        cwd=ROOT,
        env=environ,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)

    lines = err.decode().splitlines()
    assert process.returncode == 2
    assert out == b""
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"configuration error: {variable}: ")


def test_a_database_name_mongodb_would_refuse_is_refused_at_startup() -> None:
    error = _refused({"DEARDIARY_DB_NAME": "registry.prod"})

    assert error.variable == "DEARDIARY_DB_NAME"


def test_the_log_level_is_read_in_any_case() -> None:
    settings = load_settings({"DEARDIARY_LOG_LEVEL": "debug"})

    assert settings.log_level == "DEBUG"
