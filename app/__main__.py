"""``python -m app``: run the registry server."""

from __future__ import annotations

import os
import sys

from app.logs import configure
from app.serve import serve
from app.settings import ConfigError, Settings, load_settings


def _check_exposure(settings: Settings) -> None:
    if settings.enable_auth or settings.loopback_only:
        return
    if not settings.allow_insecure_network:
        raise ConfigError(
            "DEARDIARY_HOST",
            f"{settings.host} is not loopback and auth is off; set "
            "DEARDIARY_ENABLE_AUTH=true, or DEARDIARY_ALLOW_INSECURE_NETWORK=true "
            "if an open registry on this network is intended",
        )


def main() -> int:
    """Start the server and serve until Ctrl-C or SIGTERM."""
    try:
        settings = load_settings(os.environ)
        _check_exposure(settings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    configure(settings)
    try:
        return serve(settings)
    except KeyboardInterrupt:
        # A Ctrl-C before the stop signals are handled: nothing was served.
        return 130


if __name__ == "__main__":
    sys.exit(main())
