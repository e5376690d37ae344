"""Indexes, declared as data in ``indexes/<collection>.json``.

Each file lists the named indexes of one collection. They are applied,
idempotently, at every startup and by ``python -m app.indexes``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.mongo import open_client
from app.settings import ConfigError, load_settings

log = logging.getLogger("deardiary.indexes")

INDEX_DIR = Path(__file__).resolve().parent.parent / "indexes"


@dataclass(frozen=True)
class IndexSpec:
    """One named index of one collection."""

    collection: str
    name: str
    keys: list[tuple[str, int]]
    options: dict[str, Any] = field(default_factory=dict)


def load_specs(directory: Path = INDEX_DIR) -> list[IndexSpec]:
    """Every index declared under ``directory``."""
    specs = []
    for path in sorted(directory.glob("*.json")):
        collection = path.name.removesuffix(".json")
        for entry in json.loads(path.read_text()):
            entry = dict(entry)
            name = entry.pop("name")
            keys = [(key, direction) for key, direction in entry.pop("keys")]
            specs.append(IndexSpec(collection, name, keys, entry))
    return specs


async def apply_indexes(db: Any, specs: list[IndexSpec] | None = None) -> int:
    """Create every declared index that is missing; the number declared."""
    specs = load_specs() if specs is None else specs
    for spec in specs:
        await db[spec.collection].create_index(
            spec.keys, name=spec.name, **spec.options
        )
    log.info("indexes in place: %d", len(specs))
    return len(specs)


class IndexCheck:
    """Whether every declared index exists, for the readiness probe.

    Every probe looks again, one listing per collection sent together: a
    database restored from a backup or recreated on an empty volume, or an
    index dropped by hand, must take the server out of rotation.
    """

    def __init__(self, specs: list[IndexSpec] | None = None) -> None:
        self._specs = load_specs() if specs is None else specs
        self._collections = sorted({spec.collection for spec in self._specs})

    async def missing(self, db: Any) -> list[str]:
        """``collection.name`` of each declared index the database lacks."""
        listed = await asyncio.gather(
            *(db[name].index_information() for name in self._collections)
        )
        present = dict(zip(self._collections, listed, strict=True))
        return [
            f"{spec.collection}.{spec.name}"
            for spec in sorted(self._specs, key=lambda spec: spec.collection)
            if spec.name not in present[spec.collection]
        ]


async def _main() -> int:
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if settings.mongo_uri is None:
        print("DEARDIARY_MONGO_URI must name the database to index", file=sys.stderr)
        return 2
    client = open_client(settings.mongo_uri, timeout_ms=settings.mongo_timeout_ms)
    try:
        count = await apply_indexes(client[settings.db_name])
    finally:
        client.close()
    print(f"{count} indexes in place on {settings.db_name}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(asyncio.run(_main()))
