"""Settings from the environment: defaults, and one clear error naming the
variable at fault (SPEC 7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import ConfigError, Settings, load_settings


def _refused(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    return caught.value


def test_empty_environment_gives_the_defaults() -> None:
    settings = load_settings({})

    assert settings == Settings()
    assert settings.mongo_uri is None
    assert settings.embedded
    assert settings.db_name == "deardiary"
    assert (settings.host, settings.port) == ("127.0.0.1", 9000)
    assert settings.loopback_only
    assert settings.data_dir == Path(".deardiary").resolve()  # made absolute
    assert settings.enable_auth is False
    assert (settings.log_level, settings.log_format) == ("INFO", "text")
    assert settings.max_body_bytes == 1024 * 1024


def test_variables_without_the_prefix_are_ignored() -> None:
    settings = load_settings({"PORT": "1", "HOME": "/root", "deardiary_port": "1"})

    assert settings.port == 9000


def test_empty_value_means_the_default() -> None:
    settings = load_settings({"DEARDIARY_PORT": "", "DEARDIARY_LOG_FORMAT": ""})

    assert (settings.port, settings.log_format) == (9000, "text")


def test_values_are_read_into_their_types() -> None:
    settings = load_settings(
        {
            "DEARDIARY_MONGO_URI": "mongodb://db.internal:27017/?replicaSet=rs0",
            "DEARDIARY_DB_NAME": "registry",
            "DEARDIARY_HOST": "0.0.0.0",
            "DEARDIARY_PORT": "8080",
            "DEARDIARY_DATA_DIR": "/var/lib/deardiary",
            "DEARDIARY_ALLOW_INSECURE_NETWORK": "true",
            "DEARDIARY_LOG_LEVEL": "DEBUG",
            "DEARDIARY_LOG_FORMAT": "json",
            "DEARDIARY_MAX_BODY_BYTES": "65536",
        }
    )

    assert settings.mongo_uri == "mongodb://db.internal:27017/?replicaSet=rs0"
    assert not settings.embedded
    assert settings.db_name == "registry"
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert not settings.loopback_only
    assert settings.data_dir == Path("/var/lib/deardiary")
    assert settings.allow_insecure_network is True
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    assert settings.max_body_bytes == 65536


def test_srv_uri_is_accepted() -> None:
    uri = "mongodb+srv://user:secret@cluster0.example.net/"

    assert load_settings({"DEARDIARY_MONGO_URI": uri}).mongo_uri == uri


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb+srv://a.b.c:27017/",
        "mongodb+srv://one.example.net,two.example.net/",
        "mongodb+srv://user:secret@/",
    ],
)
def test_srv_uri_the_driver_would_refuse_names_the_variable(uri: str) -> None:
    error = _refused({"DEARDIARY_MONGO_URI": uri})

    assert error.variable == "DEARDIARY_MONGO_URI"
    assert "secret" not in str(error)


@pytest.mark.parametrize("port", ["abc", "0", "-1", "65536", "80.5", "90 00"])
def test_bad_port_names_the_variable(port: str) -> None:
    error = _refused({"DEARDIARY_PORT": port})

    assert error.variable == "DEARDIARY_PORT"
    assert str(error).startswith("DEARDIARY_PORT: ")


@pytest.mark.parametrize("log_format", ["xml", "JSON ", "plain"])
def test_unknown_log_format_names_the_variable(log_format: str) -> None:
    error = _refused({"DEARDIARY_LOG_FORMAT": log_format})

    assert error.variable == "DEARDIARY_LOG_FORMAT"
    assert str(error).startswith("DEARDIARY_LOG_FORMAT: ")


def test_unknown_log_level_names_the_variable() -> None:
    error = _refused({"DEARDIARY_LOG_LEVEL": "LOUD"})

    assert error.variable == "DEARDIARY_LOG_LEVEL"


@pytest.mark.parametrize(
    "uri",
    [
        "localhost:27017",
        "http://localhost:27017",
        "postgres://localhost/db",
        " mongodb://localhost",
    ],
)
def test_uri_without_a_mongodb_scheme_names_the_variable(uri: str) -> None:
    error = _refused({"DEARDIARY_MONGO_URI": uri})

    assert error.variable == "DEARDIARY_MONGO_URI"
    assert str(error).startswith("DEARDIARY_MONGO_URI: ")


@pytest.mark.parametrize(
    "uri",
    ["mongodb://", "mongodb://localhost:notaport/", "mongodb://localhost:99999/"],
)
def test_malformed_mongodb_uri_names_the_variable(uri: str) -> None:
    # Without this check the server only fails when it opens the client,
    # with a driver traceback instead of one line naming the variable.
    error = _refused({"DEARDIARY_MONGO_URI": uri})

    assert error.variable == "DEARDIARY_MONGO_URI"


@pytest.mark.parametrize(
    "name", ["DEARDIARY_PROT", "DEARDIARY_", "DEARDIARY_MONGO_URL"]
)
def test_unknown_deardiary_variable_names_itself(name: str) -> None:
    error = _refused({"DEARDIARY_PORT": "9000", name: "1"})

    assert error.variable == name
    assert str(error).startswith(f"{name}: ")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEARDIARY_ENABLE_AUTH", "perhaps"),
        ("DEARDIARY_ALLOW_INSECURE_NETWORK", "2"),
        ("DEARDIARY_DB_NAME", "d" * 64),
        ("DEARDIARY_MAX_BODY_BYTES", "10"),
        ("DEARDIARY_MAX_UPLOAD_BYTES", "lots"),
        ("DEARDIARY_MONGO_TIMEOUT_MS", "50"),
        ("DEARDIARY_TRANSACTION_RETRIES", "0"),
    ],
)
def test_out_of_range_values_name_their_variable(variable: str, value: str) -> None:
    error = _refused({variable: value})

    assert error.variable == variable


def test_first_bad_variable_is_reported_alone() -> None:
    error = _refused({"DEARDIARY_PORT": "x", "DEARDIARY_LOG_FORMAT": "y"})

    assert error.variable in {"DEARDIARY_PORT", "DEARDIARY_LOG_FORMAT"}
    assert "\n" not in str(error)


def test_settings_are_frozen() -> None:
    settings = load_settings({})

    with pytest.raises(ValueError):
        settings.port = 1  # type: ignore[misc]
