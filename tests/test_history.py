"""The history of a model's versions: registrations, stage changes (the
automatic archiving included) and deletions, oldest first."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.client import EventKind, Pagination, connect, connect_sync
from app.services.history import production_after
from app.settings import Settings
from tests.auth_modes import url_of
from tests.conftest import Caller
from tests.helpers import (
    database,
    delete,
    get_json,
    lineage,
    make_model,
    patch_json,
    refused,
    register,
)

NO_STAGE, STAGING, PRODUCTION, ARCHIVED = 1, 2, 3, 4
EVENT_FIELDS = {
    "id",
    "model_id",
    "modelversion_id",
    "version",
    "kind",
    "from_stage_id",
    "to_stage_id",
    "user_id",
    "at",
    "requested",
    "caused_by",
}


async def _stage(caller: Any, version_id: int, stage_id: int) -> None:
    await patch_json(caller, f"/modelversion/{version_id}", {"stage_id": stage_id})


async def _model_events(caller: Any, model_id: int) -> list[dict[str, Any]]:
    page = await get_json(caller, f"/model/{model_id}/history?limit=200")
    assert page["total"] == len(page["data"])
    return list(page["data"])


def _moves(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (e["kind"], e["modelversion_id"], e["from_stage_id"], e["to_stage_id"])
        for e in events
    ]


def _replay(events: list[dict[str, Any]]) -> list[set[int]]:
    """The versions in PRODUCTION after each event, replayed in order."""
    stages: dict[int, int | None] = {}
    after = []
    for event in events:
        stages[event["modelversion_id"]] = event["to_stage_id"]
        after.append({v for v, stage in stages.items() if stage == PRODUCTION})
    return after


async def test_registration_is_recorded(caller: Caller) -> None:
    ids = await lineage(caller)

    version_id = await register(caller, ids["model_id"], ids["iteration_id"])

    [event] = await _model_events(caller, ids["model_id"])
    assert set(event) == EVENT_FIELDS
    assert event["kind"] == "REGISTERED"
    assert (event["modelversion_id"], event["version"]) == (version_id, 1)
    assert (event["from_stage_id"], event["to_stage_id"]) == (None, NO_STAGE)
    assert (event["requested"], event["caused_by"]) == (True, None)
    assert event["model_id"] == ids["model_id"]
    version = await get_json(caller, f"/modelversion/{version_id}")
    assert event["at"] == version["created_date"]


async def test_promotion_over_an_incumbent_writes_two_linked_events(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    incumbent = await register(caller, ids["model_id"], ids["iteration_id"])
    challenger = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, incumbent, PRODUCTION)
    before = len(await _model_events(caller, ids["model_id"]))

    await _stage(caller, challenger, PRODUCTION)

    events = (await _model_events(caller, ids["model_id"]))[before:]
    archived, promoted = events
    assert _moves(events) == [
        ("STAGE_CHANGED", incumbent, PRODUCTION, ARCHIVED),
        ("STAGE_CHANGED", challenger, NO_STAGE, PRODUCTION),
    ]
    assert (promoted["requested"], promoted["caused_by"]) == (True, None)
    assert (archived["requested"], archived["caused_by"]) == (False, promoted["id"])
    assert archived["at"] == promoted["at"]
    version = await get_json(caller, f"/modelversion/{incumbent}")
    assert version["updated_date"] == archived["at"]


async def test_every_stage_change_is_recorded_and_no_ops_are_not(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])

    await _stage(caller, version_id, STAGING)
    await _stage(caller, version_id, STAGING)
    await patch_json(caller, f"/modelversion/{version_id}", {"description": "d"})
    await _stage(caller, version_id, PRODUCTION)
    await _stage(caller, version_id, ARCHIVED)
    await _stage(caller, version_id, PRODUCTION)

    assert _moves(await _model_events(caller, ids["model_id"]))[1:] == [
        ("STAGE_CHANGED", version_id, NO_STAGE, STAGING),
        ("STAGE_CHANGED", version_id, STAGING, PRODUCTION),
        ("STAGE_CHANGED", version_id, PRODUCTION, ARCHIVED),
        ("STAGE_CHANGED", version_id, ARCHIVED, PRODUCTION),
    ]


async def test_deletion_is_recorded_in_the_models_history(caller: Caller) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, version_id, PRODUCTION)

    await delete(caller, f"/modelversion/{version_id}")

    events = await _model_events(caller, ids["model_id"])
    assert events[-1]["kind"] == "DELETED"
    assert (events[-1]["from_stage_id"], events[-1]["to_stage_id"]) == (
        PRODUCTION,
        None,
    )
    await refused(
        caller, "GET", f"/modelversion/{version_id}/history", 404, "NOT_FOUND"
    )


async def test_version_history_holds_only_its_own_events(caller: Caller) -> None:
    ids = await lineage(caller)
    first = await register(caller, ids["model_id"], ids["iteration_id"])
    second = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, first, PRODUCTION)
    await _stage(caller, second, PRODUCTION)

    page = await get_json(caller, f"/modelversion/{first}/history")

    assert _moves(page["data"]) == [
        ("REGISTERED", first, None, NO_STAGE),
        ("STAGE_CHANGED", first, NO_STAGE, PRODUCTION),
        ("STAGE_CHANGED", first, PRODUCTION, ARCHIVED),
    ]
    assert [event["requested"] for event in page["data"]] == [True, True, False]


async def test_history_pages_oldest_first(caller: Caller) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    for stage in (STAGING, PRODUCTION, ARCHIVED, NO_STAGE):
        await _stage(caller, version_id, stage)
    everything = await _model_events(caller, ids["model_id"])

    page = await get_json(caller, f"/model/{ids['model_id']}/history?limit=2&offset=2")

    assert page["data"] == everything[2:4]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 2)
    assert [e["at"] for e in everything] == sorted(e["at"] for e in everything)
    bad = await refused(
        caller,
        "GET",
        f"/model/{ids['model_id']}/history?limit=x",
        422,
        "INVALID_PAYLOAD",
    )
    assert bad.startswith("limit:")


async def test_sequential_promotions_never_show_two_in_production(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    versions = [
        await register(caller, ids["model_id"], ids["iteration_id"]) for _ in range(4)
    ]

    for version_id in [*versions, versions[0], versions[2]]:
        await _stage(caller, version_id, PRODUCTION)

    after = _replay(await _model_events(caller, ids["model_id"]))
    assert max(len(production) for production in after) == 1
    assert after[-1] == {versions[2]}


async def test_model_history_of_missing_model_is_404(caller: Caller) -> None:
    await refused(caller, "GET", "/model/999/history", 404, "NOT_FOUND")
    await refused(caller, "GET", "/modelversion/999/history", 404, "NOT_FOUND")


async def test_model_delete_removes_its_history(
    caller: Caller, mongo: Any, settings: Settings
) -> None:
    ids = await lineage(caller)
    kept = await make_model(caller, ids["project_id"], "kept")
    await register(caller, kept, ids["iteration_id"])
    await register(caller, ids["model_id"], ids["iteration_id"])

    await delete(caller, f"/model/{ids['model_id']}")

    events = database(mongo, settings).modelversion_events
    assert await events.count_documents({"model_id": ids["model_id"]}) == 0
    assert await events.count_documents({"model_id": kept}) == 1
    await refused(caller, "GET", f"/model/{ids['model_id']}/history", 404, "NOT_FOUND")


async def test_project_delete_removes_its_history(
    caller: Caller, mongo: Any, settings: Settings
) -> None:
    ids = await lineage(caller)
    await register(caller, ids["model_id"], ids["iteration_id"])

    await delete(caller, f"/project/{ids['project_id']}")

    events = database(mongo, settings).modelversion_events
    assert await events.count_documents({}) == 0


async def test_events_name_the_user_who_acted(admin: Caller, make_user: Any) -> None:
    ids = await lineage(admin)
    version_id = await register(admin, ids["model_id"], ids["iteration_id"])
    editor = await make_user("editor", {ids["project_id"]: "ru"})

    await _stage(editor, version_id, PRODUCTION)

    events = await _model_events(admin, ids["model_id"])
    assert [event["user_id"] for event in events] == [admin.user_id, editor.user_id]


async def test_history_is_hidden_without_read_permission(
    admin: Caller, make_user: Any
) -> None:
    ids = await lineage(admin)
    version_id = await register(admin, ids["model_id"], ids["iteration_id"])
    stranger = await make_user("stranger")

    for path in (
        f"/model/{ids['model_id']}/history",
        f"/modelversion/{version_id}/history",
    ):
        message = await refused(stranger, "GET", path, 404, "NOT_FOUND")
        assert "not found" in message


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (None, None),
        ({"modelversion_id": 4, "from_stage_id": 2, "to_stage_id": 3}, 4),
        ({"modelversion_id": 4, "from_stage_id": 3, "to_stage_id": 4}, None),
        ({"modelversion_id": 4, "from_stage_id": 3, "to_stage_id": None}, None),
    ],
)
def test_production_after_reads_the_latest_production_event(
    event: dict[str, Any] | None, expected: int | None
) -> None:
    assert production_after(event) == expected


# The client -------------------------------------------------------------------


async def test_client_reads_model_and_version_history(caller: Caller) -> None:
    ids = await lineage(caller)
    first = await register(caller, ids["model_id"], ids["iteration_id"])
    second = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, first, PRODUCTION)
    await _stage(caller, second, PRODUCTION)

    async with connect(url_of(caller), token=caller.token) as client:
        events = await client.get_model_history(ids["model_id"])
        page = await client.get_model_history(ids["model_id"], Pagination(2, 3))
        walked = [
            e async for e in client.iter_model_history(ids["model_id"], page_size=2)
        ]
        own = await client.get_modelversion_history(first)
        missing = await client.get_modelversion_history(999)

    assert [e.kind for e in events] == [
        EventKind.REGISTERED,
        EventKind.REGISTERED,
        EventKind.STAGE_CHANGED,
        EventKind.STAGE_CHANGED,
        EventKind.STAGE_CHANGED,
    ]
    assert walked == events
    assert (page.total, page.data) == (5, events[3:5])
    assert events[3].caused_by == events[4].id and not events[3].requested
    assert [e.to_stage_id for e in own] == [NO_STAGE, PRODUCTION, ARCHIVED]
    assert missing == []


async def test_sync_client_reads_history(caller: Caller) -> None:
    ids = await lineage(caller)
    version_id = await register(caller, ids["model_id"], ids["iteration_id"])
    url, token = url_of(caller), caller.token

    def read() -> tuple[int, int, int]:
        with connect_sync(url, token=token) as client:
            model = client.get_model_history(ids["model_id"])
            version = client.get_modelversion_history(version_id, Pagination())
            walked = list(client.iter_modelversion_history(version_id))
        return len(model), version.total, len(walked)

    assert await asyncio.to_thread(read) == (1, 1, 1)


async def test_registrations_that_share_a_transaction_keep_their_own_user(
    admin: Caller, make_user: Any
) -> None:
    # Registrations of one model that arrive together are written in one
    # transaction; each event still names who asked, and a refused one
    # among them takes no number.
    ids = await lineage(admin)
    editor = await make_user("editor", {ids["project_id"]: "cr"})
    reader = await make_user("reader", {ids["project_id"]: "r"})
    path = f"/modelversion/model/{ids['model_id']}"
    body = {"iteration_id": ids["iteration_id"]}

    responses = await asyncio.gather(
        *(who.post(path, json=body) for who in (admin, editor, reader) * 3)
    )

    assert [r.status for r in responses] == [201, 201, 403] * 3
    created = [
        (await r.json())["modelversion_id"] for r in responses if r.status == 201
    ]
    events = await _model_events(admin, ids["model_id"])
    by_version = {event["modelversion_id"]: event["user_id"] for event in events}
    assert [by_version[v] for v in created] == [admin.user_id, editor.user_id] * 3
    assert sorted(event["version"] for event in events) == [1, 2, 3, 4, 5, 6]


async def test_promotions_that_share_a_transaction_replay_one_after_another(
    caller: Caller,
) -> None:
    # Stage changes of one model that arrive together are written in one
    # transaction, as if each ran after the one before.
    ids = await lineage(caller)
    versions = [
        await register(caller, ids["model_id"], ids["iteration_id"]) for _ in range(4)
    ]
    await _stage(caller, versions[0], PRODUCTION)
    before = len(await _model_events(caller, ids["model_id"]))

    responses = await asyncio.gather(
        *(
            caller.patch(f"/modelversion/{v}", json={"stage_id": PRODUCTION})
            for v in versions[1:]
        )
    )

    assert [r.status for r in responses] == [200] * 3
    events = await _model_events(caller, ids["model_id"])
    production = _replay(events)
    assert [len(now) for now in production[before:]] == [0, 1] * 3
    by_id = {event["id"]: event for event in events}
    for archived in events[before::2]:
        cause = by_id[archived["caused_by"]]
        assert (archived["requested"], cause["to_stage_id"]) == (False, PRODUCTION)
        assert events.index(cause) == events.index(archived) + 1
    for v in versions:
        version = await get_json(caller, f"/modelversion/{v}")
        assert {version["id"]} == production[-1] or version["stage_id"] == ARCHIVED
        # Each version's revision counts its own stage changes.
        moved = [e for e in events if e["modelversion_id"] == v][1:]
        assert version["revision"] == 1 + len(moved)


async def test_if_match_in_a_shared_transaction_sees_the_change_before_it(
    caller: Caller,
) -> None:
    ids = await lineage(caller)
    version = await register(caller, ids["model_id"], ids["iteration_id"])
    await _stage(caller, version, STAGING)
    etag = (await caller.get(f"/modelversion/{version}")).headers["ETag"]

    responses = await asyncio.gather(
        *(
            caller.patch(
                f"/modelversion/{version}",
                json={"stage_id": stage},
                headers={"If-Match": etag},
            )
            for stage in (PRODUCTION, ARCHIVED)
        )
    )

    assert sorted(r.status for r in responses) == [200, 412]
