"""Our server with the store's cost taken out, for the floor.

``python bench/memory_server.py --port P`` serves the registry application
as ``python -m app`` builds it (the same factory, middlewares, logging and
event loop), in one process on 127.0.0.1 only, but on mongomock-motor: an
in-memory store inside the process, with no round trip and no store process
competing for the cores. The benchmark compares its GET by id with a bare
aiohttp handler. mongomock-motor is a test dependency (``pip install
'.[dev]'``), never the product's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mongomock_motor import AsyncMongoMockClient, enabled_gridfs_integration

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.logs import configure
from app.serve import listen, run_app
from app.server import create_app
from app.settings import load_settings


def main() -> int:
    """Serve until SIGTERM; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port

    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEARDIARY_")}
    settings = load_settings(
        {**environ, "DEARDIARY_HOST": "127.0.0.1", "DEARDIARY_PORT": str(port)}
    )
    configure(settings)
    with enabled_gridfs_integration():
        app = create_app(settings, client=AsyncMongoMockClient())
        with listen(settings.host, settings.port) as sock:
            return run_app(app, settings, sock)


if __name__ == "__main__":
    sys.exit(main())
