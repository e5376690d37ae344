"""Our server with the store's cost taken out, for the floor.

``python bench/memory_server.py --port P`` serves the registry application
as ``python -m app`` builds it (the same factory, middlewares, logging and
event loop), in one process on 127.0.0.1 only, but on mongomock-motor: an
in-memory store inside the process, with no round trip and no store process
competing for the cores. The benchmark compares its GET by id with a bare
aiohttp handler. mongomock-motor is a test dependency (``pip install
'.[dev]'``), never the product's.

mongomock answers a query by building a cursor, testing each document of
the collection against the filter and copying field by field what matches,
a GET by id too: several times what the rest of the request costs, and
none of it the application's. Here a ``find_one`` of exactly ``{"_id":
<int>}`` reads the document straight from the collection's dict and hands
back a copy of it (a fresh dict, as a driver decodes one from the wire),
so that the store's cost stays out of what is measured.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from datetime import datetime
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
    """A find_one by one integer _id goes straight to the document."""
    find_one = Collection.find_one

    def find_one_by_id(
        self: Collection, filter: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        if not args and _by_id(filter) and kwargs.keys() <= {"session"}:
            doc = self._store._documents.get(filter["_id"])
            return None if doc is None else _fresh(doc)
        return find_one(self, filter, *args, **kwargs)

    Collection.find_one = find_one_by_id


def _by_id(query: Any) -> bool:
    return type(query) is dict and len(query) == 1 and type(query.get("_id")) is int


def _fresh(doc: dict[str, Any]) -> dict[str, Any]:
    # Stored values are scalars (ints, strings, datetimes): shared safely.
    return {
        key: value if type(value) in _SCALARS else copy.deepcopy(value)
        for key, value in doc.items()
    }


_SCALARS = frozenset({int, float, str, bytes, bool, datetime, type(None)})


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
