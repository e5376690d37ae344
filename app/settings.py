"""Configuration: every ``DEARDIARY_*`` variable, read once into `Settings`.

Nothing else in the application reads the environment; the settings object
is built at startup and passed in.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pymongo.errors import ConfigurationError, InvalidURI
from pymongo.uri_parser import parse_uri

from app.schemas import PASSWORD_MAX_BYTES, PASSWORD_MIN_BYTES

PREFIX = "DEARDIARY_"

JWT_SECRET_MIN_BYTES = 32


class ConfigError(Exception):
    """A configuration variable has an invalid value."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class Settings(BaseModel):
    """The server's configuration; field names are the variables' suffixes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mongo_uri: str | None = None
    # MongoDB refuses these characters in a database name.
    db_name: str = Field(
        default="deardiary", min_length=1, max_length=63, pattern=r'^[^/\\. "$]+$'
    )
    host: str = "127.0.0.1"
    port: int = Field(default=9000, ge=1, le=65535)
    data_dir: Path = Field(default=Path(".deardiary"), validate_default=True)
    enable_auth: bool = False
    allow_insecure_network: bool = False
    jwt_secret: str | None = None
    admin_username: str | None = None
    admin_password: str | None = None
    token_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=366 * 24 * 3600)
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    login_max_failures: int = Field(default=5, ge=1, le=1000)
    login_window_seconds: int = Field(default=300, ge=1, le=24 * 3600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_upload_bytes: int = Field(default=8 * 1024**3, ge=1024)
    mongo_timeout_ms: int = Field(default=5000, ge=100, le=120_000)
    transaction_retries: int = Field(default=50, ge=1, le=1000)
    workers: int | None = Field(default=None, ge=1, le=256)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0, le=3600)
    request_timeout_seconds: float = Field(default=15.0, gt=0, le=3600)
    jwt_secret_file: Path | None = None
    admin_password_file: Path | None = None
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=366 * 24 * 3600)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, level: object) -> object:
        return level.upper() if isinstance(level, str) else level

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # Fixed once against the directory the server was started in, so
        # that logs, the store's command line and workers all name one place.
        return path.expanduser().resolve()

    @property
    def embedded(self) -> bool:
        """True when the server runs its own store instead of a given URI."""
        return self.mongo_uri is None

    @property
    def loopback_only(self) -> bool:
        """True when the listening host is a loopback address."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def worker_count(self) -> int:
        """``DEARDIARY_WORKERS``, or one worker per core this process may
        use, less one for the embedded store when it runs one."""
        if self.workers is not None:
            return self.workers
        if hasattr(os, "sched_getaffinity"):
            cores = max(1, len(os.sched_getaffinity(0)))
        else:
            cores = os.cpu_count() or 1
        # The embedded store is one process that keeps a core busy under
        # load: on two cores, one worker beside it outran two on every
        # operation the benchmark measures (two also hand each other half
        # of each model's writes).
        return max(1, cores - 1) if self.embedded else cores


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build the settings from ``DEARDIARY_*`` variables, or raise ConfigError."""
    known = set(Settings.model_fields)
    raw: dict[str, str] = {}
    for key, value in environ.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :].lower()
        if name not in known:
            raise ConfigError(key, "unknown setting")
        if value != "":
            raw[name] = value

    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = PREFIX + str(first["loc"][0]).upper()
        raise ConfigError(variable, first["msg"]) from exc

    settings = _read_secret_files(settings)
    _check_uri(settings.mongo_uri)
    check_auth(settings)
    return settings


def check_auth(settings: Settings) -> None:
    """Raise ConfigError when auth is on without a usable secret or password.

    The messages never contain the values themselves.
    """
    if not settings.enable_auth:
        return
    if settings.jwt_secret is None:
        raise ConfigError(
            PREFIX + "JWT_SECRET", "is required when DEARDIARY_ENABLE_AUTH=true"
        )
    if len(settings.jwt_secret.encode()) < JWT_SECRET_MIN_BYTES:
        raise ConfigError(
            _source(settings, "jwt_secret"),
            f"must be at least {JWT_SECRET_MIN_BYTES} bytes long",
        )
    password = settings.admin_password
    if password is not None and not (
        PASSWORD_MIN_BYTES <= len(password.encode()) <= PASSWORD_MAX_BYTES
    ):
        raise ConfigError(
            _source(settings, "admin_password"),
            f"must be {PASSWORD_MIN_BYTES} to {PASSWORD_MAX_BYTES} bytes in UTF-8",
        )


# Secrets that may come from a file instead, as Docker and Kubernetes
# secrets are mounted: the field, and the field naming its file.
_SECRET_FILES = {
    "jwt_secret": "jwt_secret_file",
    "admin_password": "admin_password_file",
}


def _source(settings: Settings, field: str) -> str:
    """The variable a secret came from, for messages about its value."""
    from_file = getattr(settings, _SECRET_FILES[field]) is not None
    return PREFIX + (_SECRET_FILES[field] if from_file else field).upper()


def _read_secret_files(settings: Settings) -> Settings:
    """The settings with each ``*_FILE`` secret read into its field."""
    update: dict[str, str] = {}
    for field, file_field in _SECRET_FILES.items():
        path: Path | None = getattr(settings, file_field)
        if path is None:
            continue
        variable = PREFIX + file_field.upper()
        if getattr(settings, field) is not None:
            raise ConfigError(variable, f"set it or {PREFIX}{field.upper()}, not both")
        update[field] = _read_secret(variable, path)
    return settings.model_copy(update=update) if update else settings


def _read_secret(variable: str, path: Path) -> str:
    # Messages name the file's problem, never its content.
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(variable, f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(variable, f"{path} is not UTF-8 text") from None
    # Files written by echo or an editor end in a newline that is no part
    # of the secret.
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigError(variable, f"{path} is empty")
    return secret


def _check_uri(uri: str | None) -> None:
    variable = PREFIX + "MONGO_URI"
    if uri is None:
        return
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError(variable, "must start with mongodb:// or mongodb+srv://")
    if uri.startswith("mongodb+srv://"):
        # Parsing it would resolve DNS records at startup; what the driver
        # would refuse after the lookup can be told from the text alone.
        _check_srv_host(uri.removeprefix("mongodb+srv://"), variable)
        return
    try:
        parse_uri(uri)
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        # The driver's message may quote the URI, password included.
        raise ConfigError(variable, "is not a valid MongoDB URI") from exc


def _check_srv_host(rest: str, variable: str) -> None:
    """Refuse a mongodb+srv:// URI without exactly one host name and no port."""
    hosts = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    if not hosts or "," in hosts or ":" in hosts:
        raise ConfigError(
            variable, "a mongodb+srv:// URI takes one host name and no port"
        )
