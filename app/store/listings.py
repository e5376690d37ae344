"""Pages of rarely changing collections, kept between requests.

A page costs the database a count and a sort of every child of its parent;
the embedded store decodes each of those documents in Python, so a list of
a project with a thousand models takes some 100 ms there. The collections in
`LISTED` change seldom and are listed often, so each process keeps their
pages and checks, with one point read, that nothing changed since:

- Every collection in `LISTED` has a stamp, a document of `STAMPS` that
  the store bumps after each write to the collection (after the commit, or
  after the failed attempt: a needless bump only costs a reread). A write
  bumps before it answers, so a list asked for after an acknowledged change
  never comes from before it.
- A page is served from here only while the stamps of its parent's
  collection and its own collection are those read before it was fetched,
  and for `MAX_AGE_S` at most: a process killed between a commit and its
  bump leaves other processes a stale page for that long, no longer.
- A page is kept from the second time it is asked for: a walk over every
  page once pays no extra read and fills nothing.

Versions, their history, iterations and resources are left out: they change
with every registration, and a bump there would cost each one a command.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import bson

Document = dict[str, Any]

STAMPS = "listings"
LISTED = frozenset({"projects", "experiments", "models"})
MAX_AGE_S = 10.0
# Bounds memory: the encoded size of the documents kept over all pages of a
# process (a page asked for once, not kept yet, counts as its key).
MAX_BYTES = 32 * 1024 * 1024

Stamps = tuple[int, ...]
Answer = tuple[Document | None, list[Document], int]


@dataclass
class _Entry:
    stamps: Stamps | None  # None: asked for once, not kept yet
    answer: Answer | None
    at: float
    size: int


class Pages:
    """Kept pages by key, least recently used first out."""

    def __init__(
        self, *, max_bytes: int = MAX_BYTES, max_age_s: float = MAX_AGE_S
    ) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._size = 0

    def seen(self, key: Hashable) -> bool:
        """Whether ``key`` was asked for before; the first ask is noted."""
        entry = self._entries.get(key)
        if entry is None:
            self._store(key, _Entry(None, None, time.monotonic(), len(repr(key))))
            return False
        self._entries.move_to_end(key)
        return True

    def get(self, key: Hashable, stamps: Stamps) -> Answer | None:
        """The page kept for ``key`` if fetched under ``stamps`` and young
        enough, as copies the caller may change."""
        entry = self._entries.get(key)
        if entry is None or entry.answer is None or entry.stamps != stamps:
            return None
        if time.monotonic() - entry.at > self.max_age_s:
            return None
        return _copied(entry.answer)

    def put(self, key: Hashable, stamps: Stamps, answer: Answer) -> None:
        """Keep ``answer``, fetched after reading ``stamps``."""
        parent, docs, _ = answer
        kept = _copied(answer)
        size = len(repr(key)) + sum(len(bson.encode(doc)) for doc in docs)
        if parent is not None:
            size += len(bson.encode(parent))
        self._store(key, _Entry(stamps, kept, time.monotonic(), size))

    def _store(self, key: Hashable, entry: _Entry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._size -= old.size
        self._entries[key] = entry
        self._size += entry.size
        while self._size > self.max_bytes and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self._size -= dropped.size

    def clear(self) -> None:
        """Forget every page."""
        self._entries.clear()
        self._size = 0

    def __len__(self) -> int:
        return len(self._entries)


def _copied(answer: Answer) -> Answer:
    """A copy of a page whose documents can change without changing it."""
    parent, docs, total = answer
    return (
        None if parent is None else dict(parent),
        [dict(doc) for doc in docs],
        total,
    )
