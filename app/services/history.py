"""The history of a model's versions: every registration, stage change and
deletion, written in the transaction of the change it records.

- The events of one model are ordered by ``seq``, drawn from the model's
  version counter inside the transaction. The counter is read with the
  change's other documents, and the change's writes claim the places by a
  compare-and-set on the counter's ``events``: every change that writes
  history writes that counter, so two of them conflict and commit one after
  the other (or, without transactions, the loser finds the counter moved
  and runs again): ``seq`` follows commit order.
- The same step moves the counter's clock (``events_at``) forward to the
  current time, never back, and the events take their time from it; times
  never decrease along ``seq``, even between servers whose clocks differ.
- A promotion over an incumbent writes the automatic archiving first and
  the requested promotion after it, so replaying the events in order never
  shows two versions in PRODUCTION at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.schemas import EventKind, ModelVersionEvent, Page, Stage, now
from app.store.database import Document, Session, Store
from app.store.ops import Insert, Ref, Related, Update, Write

EVENTS = "modelversion_events"
# One counter per model: it numbers the versions and orders the history.
# A collection apart from the id counters in `counters`: see
# `move_version_counters`.
VERSION_COUNTERS = "version_counters"
_COUNTER_PREFIX = "modelversion:"


async def move_version_counters(store: Store) -> int:
    """Move version counters kept among the id counters, where data written
    before they had a collection of their own holds them; how many moved.

    Drawing an id is a findAndModify, which SecantusDB, the embedded store,
    answers by scanning the collection: kept with one version counter per
    model, the id counters cost a scan of every model on each id drawn.
    Stop every older server first: it would look for them in `counters`.
    """
    return await store.move(
        "counters", VERSION_COUNTERS, {"_id": {"$regex": f"^{_COUNTER_PREFIX}"}}
    )


def version_counter(model_id: int) -> str:
    """The counter that numbers a model's versions and orders its history."""
    return f"{_COUNTER_PREFIX}{model_id}"


def counter_of(model_field: str) -> Related:
    """The version counter of the model named by a document's
    ``model_field``, to read along with that document."""
    return Related(VERSION_COUNTERS, {"_id": Ref(model_field, prefix=_COUNTER_PREFIX)})


@dataclass(frozen=True)
class Change:
    """One event to record: what happened to which version."""

    version: Document
    kind: EventKind
    from_stage: int | None
    to_stage: int | None
    requested: bool = True


@dataclass(frozen=True)
class Slots:
    """Places reserved in a model's history: ``seq`` numbers from
    ``first`` on, at time ``at``, the version counter as the change leaves
    it, and the write that claims them."""

    first: int
    at: datetime
    counter: Document
    claim: Update


def production_after(event: Document | None) -> int | None:
    """The version in PRODUCTION right after ``event``, the latest event
    that moved a version into or out of PRODUCTION; None for none."""
    if event is None or event.get("to_stage_id") != Stage.PRODUCTION:
        return None
    return int(event["modelversion_id"])


class History:
    """Reads and writes the events of model versions."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def reserve(
        self, counter: Document, count: int, *, also: Mapping[str, int] | None = None
    ) -> Slots:
        """Reserve ``count`` places in the history of ``counter``'s model,
        adding ``also`` to the counter in the same write.

        Nothing is written until `record`; the claim is a compare-and-set
        on the counter as read, so a change that read it before another
        change wrote it runs again.
        """
        moment = max(_aware(counter.get("events_at")), now())
        increments = {**(also or {}), "events": count}
        after = {
            **counter,
            **{key: int(counter.get(key, 0)) + n for key, n in increments.items()},
            "events_at": moment,
        }
        claim = Update(
            VERSION_COUNTERS,
            {"_id": counter["_id"], "events": counter.get("events")},
            {"$inc": increments, "$set": {"events_at": moment}},
            required=True,
        )
        first = int(after["events"]) - count + 1
        return Slots(first=first, at=moment, counter=after, claim=claim)

    async def record(
        self,
        changes: list[Change],
        ids: list[int],
        slots: Slots,
        user_id: int,
        session: Session,
        *,
        writes: tuple[Write, ...] = (),
    ) -> None:
        """Write the change's ``writes`` and one event per change, in
        order, with the claim of ``slots``, in the caller's transaction;
        ``ids`` holds at least one id per change.

        Automatic changes name the requested one among ``changes`` as their
        cause.
        """
        await self.record_requests(
            [(changes, user_id)], ids, slots, session, writes=writes
        )

    async def record_requests(
        self,
        requests: list[tuple[list[Change], int]],
        ids: list[int],
        slots: Slots,
        session: Session,
        *,
        writes: tuple[Write, ...] = (),
    ) -> None:
        """`record` for the changes of several requests, each with the user
        who asked: in order, the automatic ones of a request naming its
        requested one as their cause."""
        docs: list[Document] = []
        for changes, user_id in requests:
            start = len(docs)
            pairs = list(zip(ids[start : start + len(changes)], changes, strict=True))
            cause = next((id_ for id_, change in pairs if change.requested), None)
            docs += [
                _event(id_, slots.first + start + n, slots.at, change, user_id, cause)
                for n, (id_, change) in enumerate(pairs)
            ]
        await self.store.write(
            [slots.claim, *writes, Insert(EVENTS, docs)], session=session
        )

    async def production_at(self, model_id: int, moment: datetime) -> int | None:
        """The id of the version that was in PRODUCTION at ``moment``."""
        latest = await self.store.find_one(
            EVENTS,
            {
                "model_id": model_id,
                "at": {"$lte": moment},
                "$or": [
                    {"to_stage_id": Stage.PRODUCTION},
                    {"from_stage_id": Stage.PRODUCTION},
                ],
            },
            sort=[("seq", -1)],
        )
        return production_after(latest)


def event_page(
    docs: list[Document], total: int, *, limit: int, offset: int
) -> Page[ModelVersionEvent]:
    """A page of event documents as the API shows it."""
    data = [ModelVersionEvent.from_doc(doc) for doc in docs]
    return Page(data=data, total=total, limit=limit, offset=offset)


def _aware(moment: Any) -> datetime:
    """A stored time as an aware UTC datetime; the epoch for none (the
    unit-test store hands back naive times)."""
    if not isinstance(moment, datetime):
        return datetime.fromtimestamp(0, UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _event(
    id_: int,
    seq: int,
    at: datetime,
    change: Change,
    user_id: int,
    cause: int | None,
) -> Document:
    version = change.version
    return {
        "_id": id_,
        "seq": seq,
        "model_id": version["model_id"],
        "project_id": version["project_id"],
        "modelversion_id": version["_id"],
        "version": version["version"],
        "kind": change.kind.value,
        "from_stage_id": change.from_stage,
        "to_stage_id": change.to_stage,
        "user_id": user_id,
        "at": at,
        "requested": change.requested,
        "caused_by": None if change.requested else cause,
    }
