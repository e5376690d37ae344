"""The store: the only code that talks to MongoDB.

It offers small document operations over integer-keyed collections, id
counters and a transaction runner that degrades to plain steps where the
server has no transactions. Driver errors are translated here: a duplicate
key becomes `DuplicateKey`, an unreachable server `DatabaseUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from pymongo import ReturnDocument
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from app.errors import Conflict, DatabaseUnavailable
from app.metrics import count_retry

log = logging.getLogger("deardiary.store")

P = ParamSpec("P")
T = TypeVar("T")

Document = dict[str, Any]
Session = Any

# Counters handing out ids; seeded at startup because a first concurrent
# upsert on a fresh counter is not safe on every server.
ID_COUNTERS = (
    "projects",
    "experiments",
    "iterations",
    "resources",
    "models",
    "modelversions",
    "users",
    "userpermissions",
    "modelversion_events",
)

# A step the current request wants to run inside the same transaction as
# its change, given the transaction body's result; see `on_commit`.
CommitHook = Callable[[Any, Any], Awaitable[None]]
_commit_hook: ContextVar[CommitHook | None] = ContextVar(
    "deardiary_commit_hook", default=None
)


@contextlib.contextmanager
def on_commit(hook: CommitHook) -> Iterator[None]:
    """Run ``hook(result, session)`` at the end of every transaction body
    started inside this block, in that transaction.

    Without transactions the hook runs right after the body's steps.
    """
    token = _commit_hook.set(hook)
    try:
        yield
    finally:
        _commit_hook.reset(token)


class DuplicateKey(Conflict):
    """A write hit a unique index; `index` names it."""

    def __init__(self, index: str) -> None:
        super().__init__(f"a unique rule was violated ({index})")
        self.index = index


def _index_name(exc: DuplicateKeyError) -> str:
    details = exc.details or {}
    message = str(details.get("errmsg", ""))
    # The server names the index in the message ("index: <name> dup key"),
    # but the key pattern is the structured part; prefer it.
    pattern = details.get("keyPattern")
    if isinstance(pattern, Mapping):
        return ",".join(str(key) for key in pattern)
    return message


def translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn driver errors of one store call into registry errors.

    Inside a transaction connection errors pass through untouched: the
    driver's transaction helper retries on their error labels.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except DuplicateKeyError as exc:
            raise DuplicateKey(_index_name(exc)) from exc
        except (ConnectionFailure, ServerSelectionTimeoutError) as exc:
            if kwargs.get("session") is not None:
                raise
            raise DatabaseUnavailable("the database is unreachable") from exc

    return wrapper


class Store:
    """Document operations on the registry's database."""

    def __init__(
        self,
        db: Any,
        *,
        transactions: bool,
        retries: int = 50,
        deadline_s: float | None = None,
    ) -> None:
        self.db = db
        self.transactions = transactions
        self.retries = retries
        # Bounds a whole transaction: the driver retries transient errors
        # for up to two minutes, too long for a caller during an outage.
        self.deadline_s = deadline_s

    @translated
    async def get(
        self, collection: str, id_: int, *, session: Session = None
    ) -> Document | None:
        """The document with ``_id`` ``id_``, or None."""
        doc: Document | None = await self.db[collection].find_one(
            {"_id": id_}, session=session
        )
        return doc

    @translated
    async def find_one(
        self,
        collection: str,
        query: Document,
        *,
        projection: Document | None = None,
        sort: list[tuple[str, int]] | None = None,
        session: Session = None,
    ) -> Document | None:
        """The first document matching ``query`` (in ``sort`` order), or None."""
        doc: Document | None = await self.db[collection].find_one(
            query, projection, sort=sort, session=session
        )
        return doc

    @translated
    async def exists(
        self, collection: str, query: Document, *, session: Session = None
    ) -> bool:
        """True when a document matches ``query``."""
        doc = await self.db[collection].find_one(query, {"_id": 1}, session=session)
        return doc is not None

    @translated
    async def find_all(
        self,
        collection: str,
        query: Document,
        *,
        projection: Document | None = None,
        session: Session = None,
    ) -> list[Document]:
        """Every document matching ``query``; for bounded sets only."""
        cursor = self.db[collection].find(query, projection, session=session)
        docs: list[Document] = await cursor.to_list(length=None)
        return docs

    @translated
    async def aggregate(
        self, collection: str, pipeline: list[Document], *, session: Session = None
    ) -> list[Document]:
        """Every document ``pipeline`` yields; for bounded results only."""
        cursor = self.db[collection].aggregate(pipeline, session=session)
        docs: list[Document] = await cursor.to_list(length=None)
        return docs

    @translated
    async def page(
        self,
        collection: str,
        query: Document,
        *,
        sort: str,
        limit: int,
        offset: int,
    ) -> tuple[list[Document], int]:
        """One page of matching documents, sorted, and the total count."""
        coll = self.db[collection]
        if limit == 0:
            # MongoDB reads a limit of 0 as "no limit".
            return [], await coll.count_documents(query)
        cursor = coll.find(query).sort(sort, 1).skip(offset).limit(limit)
        docs, total = await asyncio.gather(
            cursor.to_list(length=limit), coll.count_documents(query)
        )
        return docs, total

    @translated
    async def insert(
        self, collection: str, doc: Document, *, session: Session = None
    ) -> None:
        """Insert one document."""
        await self.db[collection].insert_one(doc, session=session)

    @translated
    async def insert_many(
        self, collection: str, docs: list[Document], *, session: Session = None
    ) -> None:
        """Insert several documents, in order."""
        if docs:
            await self.db[collection].insert_many(docs, session=session)

    @translated
    async def update(
        self,
        collection: str,
        query: Document,
        update: Document,
        *,
        session: Session = None,
    ) -> bool:
        """Apply ``update`` to the first match; True when one matched."""
        result = await self.db[collection].update_one(query, update, session=session)
        return bool(result.matched_count)

    @translated
    async def update_many(
        self,
        collection: str,
        query: Document,
        update: Document,
        *,
        session: Session = None,
    ) -> int:
        """Apply ``update`` to every match; the number modified."""
        result = await self.db[collection].update_many(query, update, session=session)
        return int(result.modified_count)

    @translated
    async def delete(
        self, collection: str, query: Document, *, session: Session = None
    ) -> int:
        """Delete every match; the number deleted."""
        result = await self.db[collection].delete_many(query, session=session)
        return int(result.deleted_count)

    @translated
    async def increment(
        self,
        counter: str,
        *,
        where: Document | None = None,
        field: str = "seq",
        session: Session = None,
    ) -> Document | None:
        """Bump a counter and return it after the bump.

        None when the counter is missing or does not match ``where``.
        """
        doc: Document | None = await self.db.counters.find_one_and_update(
            {"_id": counter, **(where or {})},
            {"$inc": {field: 1}},
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        return doc

    @translated
    async def bump(
        self,
        counter: str,
        increments: Mapping[str, int],
        *,
        where: Document | None = None,
        at_least: Document | None = None,
        session: Session = None,
    ) -> Document | None:
        """Add ``increments`` to a counter's fields, raise the fields of
        ``at_least`` to at least the values given, and return the counter.

        None when the counter is missing or does not match ``where``.
        """
        update: Document = {"$inc": dict(increments)}
        if at_least:
            update["$max"] = at_least
        doc: Document | None = await self.db.counters.find_one_and_update(
            {"_id": counter, **(where or {})},
            update,
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        return doc

    async def next_ids(self, counter: str, count: int) -> list[int]:
        """``count`` fresh ids in one step, drawn outside any transaction."""
        doc = await self.bump(counter, {"seq": count})
        if doc is None:
            await self.seed_counter(counter)
            doc = await self.bump(counter, {"seq": count})
        if doc is None:  # pragma: no cover - the seed just created it
            raise DatabaseUnavailable(f"counter {counter} could not be created")
        last = int(doc["seq"])
        return list(range(last - count + 1, last + 1))

    async def next_id(self, counter: str) -> int:
        """A fresh id, drawn outside any transaction so writers never queue."""
        doc = await self.increment(counter)
        if doc is None:
            await self.seed_counter(counter)
            doc = await self.increment(counter)
        if doc is None:  # pragma: no cover - the seed just created it
            raise DatabaseUnavailable(f"counter {counter} could not be created")
        return int(doc["seq"])

    @translated
    async def seed_counter(
        self, counter: str, *, extra: Document | None = None, session: Session = None
    ) -> None:
        """Create a counter at zero unless it exists."""
        await self.db.counters.update_one(
            {"_id": counter},
            {"$setOnInsert": {"seq": 0, **(extra or {})}},
            upsert=True,
            session=session,
        )

    async def seed_id_counters(self) -> None:
        """Create every id counter before the first request can race on it."""
        for counter in ID_COUNTERS:
            await self.seed_counter(counter)

    async def transaction(
        self, body: Callable[[Session], Awaitable[T]], *, optional: bool = False
    ) -> T:
        """Run ``body`` in a transaction, or as plain steps without one.

        The body may run more than once (the driver retries transient
        conflicts), so it must have no effects outside the database. The
        request's commit hook, if any, runs at its end (see `on_commit`).
        An ``optional`` body is safe as plain steps: it gets a transaction
        only for a commit hook to join.
        """
        hook = _commit_hook.get()
        if hook is not None:
            body = _followed_by(body, hook)
        if not self.transactions or (optional and hook is None):
            return await body(None)
        try:
            async with asyncio.timeout(self.deadline_s):
                async with await self.db.client.start_session() as session:
                    result: T = await session.with_transaction(_counted(body))
                    return result
        except DuplicateKeyError as exc:
            raise DuplicateKey(_index_name(exc)) from exc
        except (ConnectionFailure, ServerSelectionTimeoutError) as exc:
            raise DatabaseUnavailable("the database is unreachable") from exc
        except TimeoutError as exc:
            raise DatabaseUnavailable("the database did not answer in time") from exc

    async def ping(self) -> bool:
        """True when the server answers."""
        try:
            await self.db.command("ping")
        except NotImplementedError:
            return True
        except PyMongoError:
            return False
        return True


def _followed_by(
    body: Callable[[Session], Awaitable[T]], hook: CommitHook
) -> Callable[[Session], Awaitable[T]]:
    async def steps(session: Session) -> T:
        result = await body(session)
        await hook(result, session)
        return result

    return steps


def _counted(
    body: Callable[[Session], Awaitable[T]],
) -> Callable[[Session], Awaitable[T]]:
    """``body``, counting every run after the first as a retry."""
    runs = 0

    async def counted(session: Session) -> T:
        nonlocal runs
        runs += 1
        if runs > 1:
            count_retry("transient")
        return await body(session)

    return counted
