"""Our server with the store's cost taken out, for the floor.

``python bench/memory_server.py --port P`` serves the registry application
as ``python -m app`` builds it (the same factory, middlewares, logging and
event loop), in one process on 127.0.0.1 only, but on mongomock-motor: an
in-memory store inside the process, with no round trip and no store process
competing for the cores. The benchmark compares its GET by id with a bare
aiohttp handler. mongomock-motor is a test dependency (``pip install
'.[dev]'``), never the product's.

mongomock answers every query by testing each document of its collection,
one by _id too, where MongoDB looks the _id up in its index; here a query
that is exactly ``{"_id": <int>}`` is looked up the same way, so that the
store's cost stays out of what is measured.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mongomock.collection import Collection
from mongomock_motor import AsyncMongoMockClient, enabled_gridfs_integration

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.logs import configure
from app.serve import listen, run_app
from app.server import create_app
from app.settings import load_settings


def look_up_ids() -> None:
    """Queries by one integer _id go straight to the document."""
    scan = Collection._iter_documents

    def iter_documents(self: Collection, query: Any) -> Iterator[Any]:
        if isinstance(query, dict) and len(query) == 1:
            key = query.get("_id")
            if type(key) is int:
                store = self._store
                return iter([store[key]] if key in store else [])
        return scan(self, query)

    Collection._iter_documents = iter_documents


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
    look_up_ids()
    with enabled_gridfs_integration():
        app = create_app(settings, client=AsyncMongoMockClient())
        with listen(settings.host, settings.port) as sock:
            return run_app(app, settings, sock)


if __name__ == "__main__":
    sys.exit(main())
