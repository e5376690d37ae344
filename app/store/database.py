"""The store: the only code that talks to MongoDB.

It offers small document operations over integer-keyed collections, id
counters, reads and writes of several collections in one round trip where
the server allows it (see `app.store.ops`), and a transaction runner that
degrades to plain steps where the server has no transactions. Driver errors
are translated at this boundary (see `app.store.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterator,
    Mapping,
)
from collections.abc import (
    Set as AbstractSet,
)
from contextvars import Context, ContextVar
from typing import Any, TypeVar

from pymongo import ReturnDocument
from pymongo.errors import (
    ClientBulkWriteException,
    ConnectionFailure,
    DuplicateKeyError,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from app.errors import DatabaseUnavailable
from app.metrics import count_retry
from app.mongo import ServerFeatures
from app.store.errors import (
    Contention,
    DuplicateKey,
    index_name,
    translated,
    unwrapped,
)
from app.store.listings import LISTED, STAMPS, Pages, Stamps
from app.store.ops import (
    Insert,
    Related,
    Update,
    Write,
    bulk_plan,
    counted_parent,
    counted_total,
    matched,
    picked,
    read_pipeline,
)
from app.store.turns import Batches, Turns

log = logging.getLogger("deardiary.store")

T = TypeVar("T")

Document = dict[str, Any]
Session = Any

# How long the answer to a change waits for the bump of its listing stamps.
BUMP_WAIT_S = 1.0

# Counters handing out ids, one per collection; seeded at startup because a
# first concurrent upsert on a fresh counter is not safe on every server.
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

# Counters whose ids each process draws a block at a time and hands out
# from memory (see `Store.next_ids`): every registration, stage change and
# deletion writes events, and a batch of promotions needs dozens of ids.
DRAWN_AHEAD: Mapping[str, int] = {"modelversion_events": 512}

# A step the current request wants to run inside the same transaction as
# its change, given the transaction body's result; see `on_commit`.
CommitHook = Callable[[Any, Any], Awaitable[None]]
_commit_hook: ContextVar[CommitHook | None] = ContextVar(
    "deardiary_commit_hook", default=None
)
# The listed collections (see `app.store.listings`) that the transaction
# running in this context wrote, to bump their stamps once it is over.
_written: ContextVar[set[str] | None] = ContextVar("deardiary_written", default=None)


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


def awaits_commit() -> bool:
    """Whether a hook set by `on_commit` waits for the next transaction."""
    return _commit_hook.get() is not None


class Store:
    """Document operations on the registry's database."""

    def __init__(
        self,
        db: Any,
        *,
        features: ServerFeatures,
        retries: int = 50,
        deadline_s: float | None = None,
        drawn_ahead: Mapping[str, int] = DRAWN_AHEAD,
    ) -> None:
        self.db = db
        self.transactions = features.transactions
        self.joins = features.joins
        self.bulk_writes = features.bulk_writes
        self.retries = retries
        # Bounds a whole transaction: the driver retries transient errors
        # for up to two minutes, too long for a caller during an outage.
        self.deadline_s = deadline_s
        self.turns = Turns()
        self.pages = Pages()
        self._draws: Batches[str, int, list[int]] = Batches(
            self._draw_batch, patience_s=deadline_s
        )
        self._bumps: Batches[str, None, None] = Batches(self._bump_batch)
        self._ahead = {name: _Ahead(block) for name, block in drawn_ahead.items()}

    @property
    def db(self) -> Any:
        """The registry's database."""
        return self._db

    @db.setter
    def db(self, db: Any) -> None:
        self._db = db
        self._collections: dict[str, Any] = {}

    def collection(self, name: str) -> Any:
        """The collection ``name``, one handle kept per name: the driver
        builds a new object on every ``db[name]``, for each command."""
        found = self._collections.get(name)
        if found is None:
            found = self._collections[name] = self._db[name]
        return found

    @translated
    async def get(
        self, collection: str, id_: int, *, session: Session = None
    ) -> Document | None:
        """The document with ``_id`` ``id_``, or None."""
        doc: Document | None = await self.collection(collection).find_one(
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
        doc: Document | None = await self.collection(collection).find_one(
            query, projection, sort=sort, session=session
        )
        return doc

    @translated
    async def exists(
        self, collection: str, query: Document, *, session: Session = None
    ) -> bool:
        """True when a document matches ``query``."""
        doc = await self.collection(collection).find_one(
            query, {"_id": 1}, session=session
        )
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
        cursor = self.collection(collection).find(query, projection, session=session)
        docs: list[Document] = await cursor.to_list(length=None)
        return docs

    @translated
    async def aggregate(
        self, collection: str, pipeline: list[Document], *, session: Session = None
    ) -> list[Document]:
        """Every document ``pipeline`` yields; for bounded results only."""
        cursor = self.collection(collection).aggregate(pipeline, session=session)
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
        coll = self.collection(collection)
        if limit == 0:
            # MongoDB reads a limit of 0 as "no limit".
            return [], await coll.count_documents(query)
        cursor = coll.find(query).sort(sort, 1).skip(offset).limit(limit)
        docs, total = await asyncio.gather(
            cursor.to_list(length=limit), coll.count_documents(query)
        )
        return docs, total

    @translated
    async def read_with(
        self,
        collection: str,
        query: Document,
        related: Mapping[str, Related],
        *,
        session: Session = None,
    ) -> tuple[Document, dict[str, Any]] | None:
        """The first document matching ``query`` and, by name, the
        ``related`` documents of other collections; None without a match.

        One aggregate where the server takes $lookup sub-pipelines, else
        one find per document.
        """
        coll = self.collection(collection)
        if not self.joins:
            main: Document | None = await coll.find_one(query, session=session)
            if main is None:
                return None
            return main, await self._read_related(main, related, session)

        pipeline, fields = read_pipeline(query, related)
        found = await coll.aggregate(pipeline, session=session).to_list(length=1)
        return picked(found[0], related, fields) if found else None

    async def _read_related(
        self, main: Document, related: Mapping[str, Related], session: Session
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, wanted in related.items():
            coll = self.collection(wanted.collection)
            query = wanted.resolved(main)
            if wanted.many:
                cursor = coll.find(query, wanted.projection, session=session)
                found[name] = await cursor.to_list(length=None)
            else:
                found[name] = await coll.find_one(
                    query, wanted.projection, session=session
                )
        return found

    @translated
    async def page_under(
        self,
        parent: str,
        parent_id: int,
        parent_fields: Document,
        collection: str,
        query: Document,
        *,
        sort: str,
        limit: int,
        offset: int,
    ) -> tuple[Document | None, list[Document], int]:
        """The parent document (``parent_fields`` of it, or None), one page
        of its children in ``collection``, sorted, and their total.

        Two commands side by side where the server takes $lookup
        sub-pipelines (the parent with the count, and the page), three
        otherwise. A page of listed collections asked for again is served
        from `app.store.listings` after one read of their stamps while
        neither changed.
        """

        def fetch() -> Awaitable[tuple[Document | None, list[Document], int]]:
            return self._page_under(
                parent, parent_id, parent_fields, collection, query, sort, limit, offset
            )

        if not {parent, collection} <= LISTED or not limit:
            return await fetch()
        key: Hashable = (parent, parent_id, repr(parent_fields), collection)
        key = (key, repr(query), sort, limit, offset)
        if not self.pages.seen(key):
            return await fetch()
        # Read before the page, so that a page kept under these stamps is
        # never older than they are.
        stamps = await self._stamps(parent, collection)
        kept = self.pages.get(key, stamps)
        if kept is not None:
            return kept
        answer = await fetch()
        self.pages.put(key, stamps, answer)
        return answer

    async def _stamps(self, *collections: str) -> Stamps:
        found = (
            await self.collection(STAMPS)
            .find({"_id": {"$in": list(collections)}})
            .to_list(length=None)
        )
        by_name = {doc["_id"]: int(doc.get("n", 0)) for doc in found}
        return tuple(by_name.get(name, 0) for name in collections)

    @contextlib.asynccontextmanager
    async def _changing(self, *collections: str) -> AsyncIterator[None]:
        """Mark the listed ``collections`` as changed by the block: their
        stamps are bumped after it, or after the transaction it is part of,
        whether it succeeds or not."""
        listed = LISTED.intersection(collections)
        pending = _written.get()
        if pending is not None:
            pending.update(listed)
        if not listed or pending is not None:
            yield
            return
        try:
            yield
        finally:
            await asyncio.shield(self._bump(listed))

    async def _bump(self, collections: AbstractSet[str]) -> None:
        # The bumps of one stamp asked for while one runs go together in the
        # next: it starts after each of them was asked for, which is all a
        # change needs of it. The change is done whatever becomes of its
        # bump, so its answer waits BUMP_WAIT_S for it at most.
        bumps = asyncio.gather(
            *(self._bumps.submit(name, None) for name in sorted(collections))
        )
        try:
            async with asyncio.timeout(BUMP_WAIT_S):
                await asyncio.shield(bumps)
        except TimeoutError:
            self._bump_failed(collections, "no answer in time")

    async def _bump_batch(self, name: str, asked: list[None]) -> list[Exception | None]:
        try:
            await self.collection(STAMPS).update_one(
                {"_id": name}, {"$inc": {"n": 1}}, upsert=True
            )
        except PyMongoError as exc:
            self._bump_failed({name}, str(exc))
        return [None] * len(asked)

    def _bump_failed(self, collections: AbstractSet[str], why: str) -> None:
        # The change itself is done. This process forgets its pages; those
        # of other processes may outlive it, for MAX_AGE_S at most.
        self.pages.clear()
        log.warning("could not mark %s as changed: %s", sorted(collections), why)

    async def _page_under(
        self,
        parent: str,
        parent_id: int,
        parent_fields: Document,
        collection: str,
        query: Document,
        sort: str,
        limit: int,
        offset: int,
    ) -> tuple[Document | None, list[Document], int]:
        coll = self.collection(collection)
        cursor = coll.find(query).sort(sort, 1).skip(offset).limit(limit)
        # MongoDB reads a limit of 0 as "no limit".
        listed = cursor.to_list(length=limit) if limit else _nothing()
        if not self.joins:
            found, docs, total = await asyncio.gather(
                self.collection(parent).find_one({"_id": parent_id}, parent_fields),
                listed,
                coll.count_documents(query),
            )
            return found, docs, total

        counted = self.collection(parent).aggregate(
            counted_parent(parent_id, parent_fields, collection, query)
        )
        parents, docs = await asyncio.gather(counted.to_list(length=1), listed)
        if not parents:
            return None, docs, 0
        return parents[0], docs, counted_total(parents[0])

    async def write(self, writes: list[Write], *, session: Session) -> None:
        """Apply ``writes`` in order: as one bulkWrite inside a transaction
        on a server that takes one, else one command each.

        Raises `Contention` when a required write matches fewer documents
        than it must; without a transaction the writes before it stay
        applied.
        """
        # SecantusDB 0.7 refuses the readConcern that the driver sends
        # with the first command of a retried transaction, when that command
        # is a bulkWrite; MongoDB takes it. Every body here reads before it
        # writes (its writes follow from what it read), so none opens with
        # a bulkWrite.
        async with self._changing(*(step.collection for step in writes)):
            if session is not None and self.bulk_writes:
                await self._write_bulk(writes, session=session)
                return
            for step in writes:
                if not await self._write_one(step, session=session):
                    raise Contention(f"a write to {step.collection} matched too few")

    @translated
    async def _write_bulk(self, writes: list[Write], *, session: Session) -> None:
        plan = bulk_plan(writes, self.db.name)
        try:
            result = await self.db.client.bulk_write(
                plan.models, session=session, verbose_results=True
            )
        except ClientBulkWriteException as exc:
            raise unwrapped(exc) from None
        for index, least in plan.required.items():
            if matched(result, index) < least:
                raise Contention(f"write {index} of a bulkWrite matched too few")

    @translated
    async def _write_one(self, step: Write, *, session: Session) -> bool:
        """Apply one write; False when a required one matched too few."""
        coll = self.collection(step.collection)
        if isinstance(step, Insert):
            if step.docs:
                await coll.insert_many(step.docs, session=session)
            return True
        if isinstance(step, Update):
            change = coll.update_many if step.many else coll.update_one
            updated = await change(step.query, step.update, session=session)
            return updated.matched_count >= step.matches or not step.required
        removal = coll.delete_many if step.many else coll.delete_one
        deleted = await removal(step.query, session=session)
        return bool(deleted.deleted_count) or not step.required

    @translated
    async def insert(
        self, collection: str, doc: Document, *, session: Session = None
    ) -> None:
        """Insert one document."""
        async with self._changing(collection):
            await self.collection(collection).insert_one(doc, session=session)

    @translated
    async def insert_many(
        self, collection: str, docs: list[Document], *, session: Session = None
    ) -> None:
        """Insert several documents, in order."""
        if docs:
            async with self._changing(collection):
                await self.collection(collection).insert_many(docs, session=session)

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
        async with self._changing(collection):
            result = await self.collection(collection).update_one(
                query, update, session=session
            )
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
        async with self._changing(collection):
            result = await self.collection(collection).update_many(
                query, update, session=session
            )
        return int(result.modified_count)

    @translated
    async def delete(
        self, collection: str, query: Document, *, session: Session = None
    ) -> int:
        """Delete every match; the number deleted."""
        async with self._changing(collection):
            result = await self.collection(collection).delete_many(
                query, session=session
            )
        return int(result.deleted_count)

    @translated
    async def bump(
        self, collection: str, counter: str, *, field: str, session: Session = None
    ) -> bool:
        """Add one to a counter's ``field``, to make the transaction that
        does it conflict with any other that writes the counter; True when
        the counter exists."""
        result = await self.collection(collection).update_one(
            {"_id": counter}, {"$inc": {field: 1}}, session=session
        )
        return bool(result.matched_count)

    @translated
    async def _draw(self, counter: str, count: int) -> Document | None:
        doc: Document | None = await self.collection("counters").find_one_and_update(
            {"_id": counter},
            {"$inc": {"seq": count}},
            return_document=ReturnDocument.AFTER,
        )
        return doc

    async def next_ids(self, counter: str, count: int) -> list[int]:
        """``count`` fresh ids, drawn outside any transaction so writers
        never queue; the draws of one counter that arrive while one runs
        are drawn together, in one step (see `app.store.turns.Batches`),
        and those of a counter drawn ahead come from the block in hand."""
        ahead = self._ahead.get(counter)
        if ahead is None:
            return await self._draws.submit(counter, count)
        while len(ahead.ids) < count:
            # One block is drawn at a time, for every caller short of ids:
            # a draw that fails fails them all at once, and the next caller
            # draws again. The ids a process holds when it stops are never
            # given out, a gap (which SPEC 6 allows).
            if ahead.refill is None:
                refill = self._refill(counter, ahead, max(ahead.block, count))
                ahead.refill = asyncio.create_task(refill, context=Context())
                # Its error is each waiting caller's, and no one's to log
                # when every one of them gave up first.
                ahead.refill.add_done_callback(_retrieved)
            await asyncio.shield(ahead.refill)
        return [ahead.ids.popleft() for _ in range(count)]

    async def _refill(self, counter: str, ahead: _Ahead, size: int) -> None:
        try:
            ahead.ids.extend(await self._draws.submit(counter, size))
        finally:
            ahead.refill = None

    async def _draw_batch(
        self, counter: str, counts: list[int]
    ) -> list[list[int] | Exception]:
        """The ids of each of ``counts``, in one step on ``counter``."""
        total = sum(counts)
        doc = await self._draw(counter, total)
        if doc is None:
            await self.seed_counter(counter)
            doc = await self._draw(counter, total)
        if doc is None:  # pragma: no cover - the seed just created it
            raise DatabaseUnavailable(f"counter {counter} could not be created")
        ids = iter(range(int(doc["seq"]) - total + 1, int(doc["seq"]) + 1))
        return [[next(ids) for _ in range(count)] for count in counts]

    async def next_id(self, counter: str) -> int:
        """A fresh id, drawn outside any transaction."""
        return (await self.next_ids(counter, 1))[0]

    @translated
    async def seed_counter(
        self, counter: str, *, extra: Document | None = None, session: Session = None
    ) -> None:
        """Create a counter at zero unless it exists."""
        await self.collection("counters").update_one(
            {"_id": counter},
            {"$setOnInsert": {"seq": 0, **(extra or {})}},
            upsert=True,
            session=session,
        )

    async def seed_id_counters(self) -> None:
        """Create every id counter and listing stamp before the first
        request can race on it."""
        for name in sorted(LISTED):
            await self.collection(STAMPS).update_one(
                {"_id": name}, {"$setOnInsert": {"n": 0}}, upsert=True
            )
        for counter in ID_COUNTERS:
            await self.seed_counter(counter)

    @translated
    async def move(self, source: str, target: str, query: Document) -> int:
        """Move the documents matching ``query`` from ``source`` to
        ``target``, keeping any already there; how many moved."""
        moved = 0
        async for doc in self.collection(source).find(query):
            fields = {key: value for key, value in doc.items() if key != "_id"}
            await self.collection(target).update_one(
                {"_id": doc["_id"]}, {"$setOnInsert": fields}, upsert=True
            )
            await self.collection(source).delete_one({"_id": doc["_id"]})
            moved += 1
        return moved

    async def transaction(
        self,
        body: Callable[[Session], Awaitable[T]],
        *,
        optional: bool = False,
        turn: Hashable | None = None,
    ) -> T:
        """Run ``body`` in a transaction, or as plain steps without one.

        The body may run more than once (the driver retries transient
        conflicts, and a body whose write met `Contention` runs again from
        its reads), so it must have no effects outside the database. The
        request's commit hook, if any, runs at its end (see `on_commit`).
        An ``optional`` body is safe as plain steps: it gets a transaction
        only for a commit hook to join. Bodies of this process that name
        the same ``turn`` run one at a time (see `app.store.turns`).
        """
        written: set[str] = set()
        token = _written.set(written)
        try:
            async with self.turns.of(turn):
                return await self._transaction(body, optional=optional)
        finally:
            _written.reset(token)
            if written:
                await asyncio.shield(self._bump(written))

    async def _transaction(
        self, body: Callable[[Session], Awaitable[T]], *, optional: bool
    ) -> T:
        hook = _commit_hook.get()
        if hook is not None:
            body = _followed_by(body, hook)
        plain = not self.transactions or (optional and hook is None)
        for attempt in range(self.retries):
            try:
                if plain:
                    return await body(None)
                return await self._in_transaction(body)
            except Contention as exc:
                log.debug("transaction body runs again (try %d): %s", attempt, exc)
                count_retry("conflict")
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
        raise DatabaseUnavailable(
            "the change met too much contention to complete; retry"
        )

    async def _in_transaction(self, body: Callable[[Session], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.deadline_s):
                async with await self.db.client.start_session() as session:
                    result: T = await session.with_transaction(_counted(body))
                    return result
        except DuplicateKeyError as exc:
            raise DuplicateKey(index_name(exc)) from exc
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


async def _nothing() -> list[Document]:
    return []


def _followed_by(
    body: Callable[[Session], Awaitable[T]], hook: CommitHook
) -> Callable[[Session], Awaitable[T]]:
    async def steps(session: Session) -> T:
        result = await body(session)
        await hook(result, session)
        return result

    return steps


# The pause before a transaction runs again after a transient error: a
# random share of 5 ms, growing by half each time up to 500 ms, as PyMongo's
# own async with_transaction does. Motor's runs again at once, which turns
# contention on one document (a model's counter) into a storm of aborts.
BACKOFF_INITIAL_S = 0.005
BACKOFF_MAX_S = 0.5


def retry_pause(retry: int) -> float:
    """The most a transaction waits before its ``retry``-th rerun."""
    return float(min(BACKOFF_INITIAL_S * 1.5**retry, BACKOFF_MAX_S))


def _counted(
    body: Callable[[Session], Awaitable[T]],
) -> Callable[[Session], Awaitable[T]]:
    """``body``, counting every run after the first as a retry, each after
    a jittered pause."""
    runs = 0

    async def counted(session: Session) -> T:
        nonlocal runs
        runs += 1
        if runs > 1:
            count_retry("transient")
            await asyncio.sleep(random.random() * retry_pause(runs - 1))
        return await body(session)

    return counted


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class _Ahead:
    """The ids of one counter drawn ahead and not yet handed out, in
    order, and the draw of the next block while one runs."""

    def __init__(self, block: int) -> None:
        self.block = block
        self.ids: deque[int] = deque()
        self.refill: asyncio.Task[None] | None = None
