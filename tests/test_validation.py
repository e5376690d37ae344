"""Strict input and the error envelope across routes (SPEC 3).

Every refused request must answer in the envelope and change nothing, so
each test compares the whole database before and after.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app.schemas import Project
from app.settings import Settings
from tests.helpers import (
    call,
    contents,
    database,
    get_json,
    lineage,
    make_model,
    patch_json,
    post_json,
    refused,
    register,
    serving,
    upload,
)

# One of every JSON route that takes a body, with the smallest valid body.
JSON_ROUTES = [
    ("POST", "/project", {"name": "n"}),
    ("PATCH", "/project/{project_id}", {}),
    ("POST", "/experiment/project/{project_id}", {"name": "n"}),
    ("PATCH", "/experiment/{experiment_id}", {}),
    ("POST", "/iteration/experiment/{experiment_id}", {}),
    ("PATCH", "/iteration/{iteration_id}", {}),
    ("PATCH", "/resource/{resource_id}", {}),
    ("POST", "/model/project/{project_id}", {"name": "n"}),
    ("PATCH", "/model/{model_id}", {}),
    ("POST", "/modelversion/model/{model_id}", {"iteration_id": "{iteration_id}"}),
    ("PATCH", "/modelversion/{version_id}", {}),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in JSON_ROUTES]

# Routes with a name, and the record each one names.
NAMED = [
    ("POST", "/project", "/project/{new}"),
    ("PATCH", "/project/{project_id}", "/project/{project_id}"),
    ("POST", "/experiment/project/{project_id}", "/experiment/{new}"),
    ("PATCH", "/experiment/{experiment_id}", "/experiment/{experiment_id}"),
    ("PATCH", "/resource/{resource_id}", "/resource/{resource_id}"),
    ("POST", "/model/project/{project_id}", "/model/{new}"),
    ("PATCH", "/model/{model_id}", "/model/{model_id}"),
]
NAMED_IDS = [f"{method} {path}" for method, path, _ in NAMED]

# The free-text fields of every route, up to 65,536 characters.
TEXTS = [
    ("POST", "/project", "description", {"name": "n"}),
    ("PATCH", "/project/{project_id}", "description", {}),
    ("POST", "/experiment/project/{project_id}", "description", {"name": "n"}),
    ("PATCH", "/experiment/{experiment_id}", "description", {}),
    ("POST", "/iteration/experiment/{experiment_id}", "notes", {}),
    ("PATCH", "/iteration/{iteration_id}", "notes", {}),
    ("PATCH", "/iteration/{iteration_id}", "error_message", {}),
    ("PATCH", "/resource/{resource_id}", "description", {}),
    ("POST", "/model/project/{project_id}", "description", {"name": "n"}),
    ("PATCH", "/model/{model_id}", "description", {}),
    (
        "POST",
        "/modelversion/model/{model_id}",
        "description",
        {"iteration_id": "{iteration_id}"},
    ),
    ("PATCH", "/modelversion/{version_id}", "description", {}),
]
TEXT_IDS = [f"{method} {path} {field}" for method, path, field, _ in TEXTS]

# The fields each PATCH route takes.
PATCH_FIELDS = {
    "/project/{project_id}": ["name", "description"],
    "/experiment/{experiment_id}": ["name", "status_id", "description"],
    "/iteration/{iteration_id}": ["status_id", "notes", "error_message"],
    "/resource/{resource_id}": ["name", "description"],
    "/model/{model_id}": ["name", "description"],
    "/modelversion/{version_id}": ["stage_id", "description", "resource_id"],
}

NOT_AN_INTEGER = [True, False, 3.0, 2.5, "3", "three", [3], {"v": 3}]


@pytest.fixture
async def ids(api: TestClient) -> dict[str, int]:
    """One record of every kind, the version pointing at the resource."""
    found: dict[str, int] = dict(await lineage(api))
    found["resource_id"] = await upload(api, found["experiment_id"], b"weights")
    found["version_id"] = await register(
        api, found["model_id"], found["iteration_id"], resource_id=found["resource_id"]
    )
    return found


@pytest.fixture
def db(mongo: Any, settings: Settings) -> Any:
    return database(mongo, settings)


@pytest.fixture
async def roomy_api(settings: Settings, mongo: Any) -> AsyncIterator[TestClient]:
    """The app with room for bodies that carry 65,536-character texts."""
    roomy = settings.model_copy(update={"max_body_bytes": 1024 * 1024})
    async with serving(roomy, mongo) as client:
        yield client


def _fill(template: Any, ids: dict[str, int]) -> Any:
    """``template`` with every ``{name}`` replaced by the id it names."""
    if isinstance(template, str):
        if template.startswith("{") and template.endswith("}"):
            return ids[template[1:-1]]
        return template.format(**ids)
    if isinstance(template, dict):
        return {key: _fill(value, ids) for key, value in template.items()}
    return template


async def _refused_unchanged(
    api: TestClient,
    db: Any,
    method: str,
    path: str,
    status: int,
    code: str,
    **kwargs: Any,
) -> str:
    """Refuse the request, and check the database did not change."""
    before = await contents(db)
    message = await refused(api, method, path, status, code, **kwargs)
    assert await contents(db) == before
    return message


async def _all_refused(
    api: TestClient,
    db: Any,
    requests: list[tuple[str, str, dict[str, Any]]],
    status: int,
    code: str,
) -> list[tuple[Any, ...]]:
    """Send each request; list the ones not refused with ``status`` and
    ``code``, and check none of them changed the database."""
    before = await contents(db)
    wrong = []
    for method, path, kwargs in requests:
        response = await api.request(method, path, **kwargs)
        body = await response.json()
        if response.status != status or body.get("code") != code:
            wrong.append((method, path, kwargs, response.status, body))
    assert await contents(db) == before
    return wrong


# Bodies that are not a JSON object -------------------------------------


NOT_AN_OBJECT = [
    pytest.param(b"{", id="truncated"),
    pytest.param(b"{'name': 'n'}", id="single-quotes"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'[{"name": "n"}]', id="array-of-object"),
    pytest.param(b'"name"', id="string"),
    pytest.param(b"null", id="null"),
    pytest.param(b"3", id="number"),
    pytest.param(b"", id="empty"),
    pytest.param(b"   ", id="whitespace"),
    pytest.param(b'{"name": "n"} {}', id="two-documents"),
    pytest.param(b'{"name": "\xff"}', id="not-utf8"),
    pytest.param(b"[" * 50_000, id="deeply-nested"),
]


@pytest.mark.parametrize("raw", NOT_AN_OBJECT)
@pytest.mark.parametrize(
    "path",
    ["/project", "/modelversion/model/{model_id}", "/modelversion/{version_id}"],
)
async def test_body_that_is_not_a_json_object_is_400(
    api: TestClient, db: Any, ids: dict[str, int], path: str, raw: bytes
) -> None:
    method = "PATCH" if path.endswith("{version_id}") else "POST"

    await _refused_unchanged(
        api,
        db,
        method,
        _fill(path, ids),
        400,
        "INVALID_JSON",
        data=raw,
        headers={"Content-Type": "application/json"},
    )


@pytest.mark.parametrize(("method", "path", "body"), JSON_ROUTES, ids=ROUTE_IDS)
async def test_every_json_route_answers_400_to_a_non_object(
    api: TestClient,
    db: Any,
    ids: dict[str, int],
    method: str,
    path: str,
    body: Any,
) -> None:
    requests = [
        (method, _fill(path, ids), {"data": raw})
        for raw in (b"{", b"[]", b"", b'"text"')
    ]

    assert await _all_refused(api, db, requests, 400, "INVALID_JSON") == []


@pytest.mark.parametrize(("method", "path", "body"), JSON_ROUTES, ids=ROUTE_IDS)
async def test_duplicate_json_keys_are_400(
    api: TestClient,
    db: Any,
    ids: dict[str, int],
    method: str,
    path: str,
    body: Any,
) -> None:
    raw = b'{"description": "a", "description": "b"}'

    message = await _refused_unchanged(
        api, db, method, _fill(path, ids), 400, "INVALID_JSON", data=raw
    )

    assert "description" in message


async def test_duplicate_keys_in_a_nested_object_are_400(
    api: TestClient, db: Any, ids: dict[str, int]
) -> None:
    raw = b'{"name": "n", "x": {"a": 1, "a": 2}}'

    await _refused_unchanged(api, db, "POST", "/project", 400, "INVALID_JSON", data=raw)


@pytest.mark.parametrize(("method", "path", "body"), JSON_ROUTES, ids=ROUTE_IDS)
async def test_body_over_the_limit_is_413(
    api: TestClient,
    db: Any,
    settings: Settings,
    ids: dict[str, int],
    method: str,
    path: str,
    body: Any,
) -> None:
    oversized = {**_fill(body, ids), "description": "d" * settings.max_body_bytes}

    await _refused_unchanged(
        api, db, method, _fill(path, ids), 413, "PAYLOAD_TOO_LARGE", json=oversized
    )


@pytest.mark.parametrize(("method", "path", "body"), JSON_ROUTES, ids=ROUTE_IDS)
async def test_unknown_field_is_422_naming_it(
    api: TestClient,
    db: Any,
    ids: dict[str, int],
    method: str,
    path: str,
    body: Any,
) -> None:
    message = await _refused_unchanged(
        api,
        db,
        method,
        _fill(path, ids),
        422,
        "INVALID_PAYLOAD",
        json={**_fill(body, ids), "colour": "blue"},
    )

    assert message == "colour: unknown field"


@pytest.mark.parametrize(("method", "path", "body"), JSON_ROUTES, ids=ROUTE_IDS)
async def test_smallest_valid_body_is_accepted(
    api: TestClient,
    ids: dict[str, int],
    method: str,
    path: str,
    body: Any,
) -> None:
    payload = await call(
        api,
        method,
        _fill(path, ids),
        201 if method == "POST" else 200,
        json=_fill(body, ids),
    )

    if method == "POST":
        assert [key.endswith("_id") for key in payload] == [True]
    else:
        assert payload == {"message": "UPDATED"}


# Stage and status ------------------------------------------------------


@pytest.mark.parametrize("value", [*NOT_AN_INTEGER, 0, 5, -1, 2**63], ids=repr)
async def test_stage_id_that_is_no_stage_is_422(
    api: TestClient, db: Any, ids: dict[str, int], value: Any
) -> None:
    message = await _refused_unchanged(
        api,
        db,
        "PATCH",
        f"/modelversion/{ids['version_id']}",
        422,
        "INVALID_PAYLOAD",
        json={"stage_id": value},
    )

    assert message.startswith("stage_id")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
async def test_non_json_number_literals_are_refused(
    api: TestClient, db: Any, ids: dict[str, int], literal: bytes
) -> None:
    # Python's parser accepts these; whether as 400 or 422, they must not
    # pass for a stage.
    before = await contents(db)

    response = await api.patch(
        f"/modelversion/{ids['version_id']}", data=b'{"stage_id": ' + literal + b"}"
    )
    body = await response.json()

    assert (response.status, body["code"]) in {
        (400, "INVALID_JSON"),
        (422, "INVALID_PAYLOAD"),
    }
    assert await contents(db) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/experiment/project/{project_id}", {"name": "n"}),
        ("PATCH", "/experiment/{experiment_id}", {}),
        ("PATCH", "/iteration/{iteration_id}", {}),
    ],
)
async def test_status_id_that_is_no_status_is_422(
    api: TestClient,
    db: Any,
    ids: dict[str, int],
    method: str,
    path: str,
    body: Any,
) -> None:
    requests = [
        (method, _fill(path, ids), {"json": {**body, "status_id": value}})
        for value in [*NOT_AN_INTEGER, 0, 5, -1]
    ]

    assert await _all_refused(api, db, requests, 422, "INVALID_PAYLOAD") == []


async def test_iterations_have_a_fourth_status_experiments_do_not(
    api: TestClient, db: Any, ids: dict[str, int]
) -> None:
    await patch_json(api, f"/iteration/{ids['iteration_id']}", {"status_id": 4})

    await _refused_unchanged(
        api,
        db,
        "PATCH",
        f"/experiment/{ids['experiment_id']}",
        422,
        "INVALID_PAYLOAD",
        json={"status_id": 4},
    )


async def test_iteration_status_cannot_be_set_on_create(
    api: TestClient, db: Any, ids: dict[str, int]
) -> None:
    await _refused_unchanged(
        api,
        db,
        "POST",
        f"/iteration/experiment/{ids['experiment_id']}",
        422,
        "INVALID_PAYLOAD",
        json={"status_id": 2},
    )


# Null in a PATCH ---------------------------------------------------------


@pytest.mark.parametrize(("path", "fields"), PATCH_FIELDS.items())
async def test_null_in_patch_leaves_the_field_unchanged(
    api: TestClient, ids: dict[str, int], path: str, fields: list[str]
) -> None:
    where = _fill(path, ids)
    before = await get_json(api, where)

    body = await patch_json(api, where, dict.fromkeys(fields))

    assert body == {"message": "UPDATED"}
    assert await get_json(api, where) == before


async def test_null_beside_a_value_changes_only_the_value(
    api: TestClient, ids: dict[str, int]
) -> None:
    path = f"/modelversion/{ids['version_id']}"

    await patch_json(
        api, path, {"stage_id": None, "resource_id": None, "description": "new"}
    )

    version = await get_json(api, path)
    assert (version["stage_id"], version["resource_id"], version["description"]) == (
        1,
        ids["resource_id"],
        "new",
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/project", {"name": None}),
        ("POST", "/model/project/{project_id}", {"name": None}),
        ("POST", "/modelversion/model/{model_id}", {"iteration_id": None}),
    ],
)
async def test_null_for_a_required_field_is_422(
    api: TestClient,
    db: Any,
    ids: dict[str, int],
    method: str,
    path: str,
    body: Any,
) -> None:
    await _refused_unchanged(
        api, db, method, _fill(path, ids), 422, "INVALID_PAYLOAD", json=body
    )


# Names -----------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "record"), NAMED, ids=NAMED_IDS)
async def test_names_are_trimmed(
    api: TestClient, ids: dict[str, int], method: str, path: str, record: str
) -> None:
    status = 201 if method == "POST" else 200

    answer = await call(
        api, method, _fill(path, ids), status, json={"name": " \t padded name \n "}
    )

    new = next(iter(answer.values())) if method == "POST" else 0
    found = await get_json(api, _fill(record, {**ids, "new": new}))
    assert found["name"] == "padded name"


@pytest.mark.parametrize(("method", "path", "record"), NAMED, ids=NAMED_IDS)
async def test_name_of_256_characters_is_fine(
    api: TestClient, ids: dict[str, int], method: str, path: str, record: str
) -> None:
    status = 201 if method == "POST" else 200

    await call(api, method, _fill(path, ids), status, json={"name": "n" * 256})


BAD_NAMES = [
    "",
    "   \t\n ",
    "n" * 257,
    " " + "n" * 257 + " ",
    "a\x00b",
    "a\x07b",
    "a\nb",
    "a\x7fb",
    "a\x85b",
    5,
    ["n"],
]


@pytest.mark.parametrize(("method", "path", "record"), NAMED, ids=NAMED_IDS)
async def test_bad_name_is_422_naming_the_field(
    api: TestClient,
    db: Any,
    ids: dict[str, int],
    method: str,
    path: str,
    record: str,
) -> None:
    requests = [(method, _fill(path, ids), {"json": {"name": n}}) for n in BAD_NAMES]

    assert await _all_refused(api, db, requests, 422, "INVALID_PAYLOAD") == []
    message = await refused(
        api, method, _fill(path, ids), 422, "INVALID_PAYLOAD", json={"name": ""}
    )
    assert message.startswith("name:")


# Texts -----------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "field", "body"), TEXTS, ids=TEXT_IDS)
async def test_text_of_65536_characters_is_fine(
    roomy_api: TestClient,
    ids: dict[str, int],
    method: str,
    path: str,
    field: str,
    body: Any,
) -> None:
    status = 201 if method == "POST" else 200

    await call(
        roomy_api,
        method,
        _fill(path, ids),
        status,
        json={**_fill(body, ids), field: "é" * 65_536},
    )


@pytest.mark.parametrize(("method", "path", "field", "body"), TEXTS, ids=TEXT_IDS)
async def test_text_over_65536_characters_is_422(
    roomy_api: TestClient,
    db: Any,
    ids: dict[str, int],
    method: str,
    path: str,
    field: str,
    body: Any,
) -> None:
    message = await _refused_unchanged(
        roomy_api,
        db,
        method,
        _fill(path, ids),
        422,
        "INVALID_PAYLOAD",
        json={**_fill(body, ids), field: "d" * 65_537},
    )

    assert message.startswith(f"{field}:")


@pytest.mark.parametrize(("method", "path", "field", "body"), TEXTS, ids=TEXT_IDS)
async def test_text_keeps_line_breaks_and_refuses_other_controls(
    api: TestClient,
    db: Any,
    ids: dict[str, int],
    method: str,
    path: str,
    field: str,
    body: Any,
) -> None:
    status = 201 if method == "POST" else 200
    await call(
        api,
        method,
        _fill(path, ids),
        status,
        json={**_fill(body, ids), field: "line\r\n\tindented"},
    )

    await _refused_unchanged(
        api,
        db,
        method,
        _fill(path, ids),
        422,
        "INVALID_PAYLOAD",
        json={**_fill(body, ids), field: "bell\x07"},
    )


# Ids in bodies ---------------------------------------------------------


ID_FIELDS = [
    ("POST", "/modelversion/model/{model_id}", "iteration_id", {}),
    (
        "POST",
        "/modelversion/model/{model_id}",
        "resource_id",
        {"iteration_id": "{iteration_id}"},
    ),
    ("PATCH", "/modelversion/{version_id}", "resource_id", {}),
    ("POST", "/iteration/experiment/{experiment_id}", "parent_iteration_id", {}),
]
ID_FIELD_IDS = [f"{method} {path} {field}" for method, path, field, _ in ID_FIELDS]


BAD_IDS = [2**63, 2**64, 2**64 + 1, 10**30, 0, -1, -(2**63), *NOT_AN_INTEGER]


@pytest.mark.parametrize(
    ("method", "path", "field", "body"), ID_FIELDS, ids=ID_FIELD_IDS
)
async def test_id_in_body_that_is_no_64_bit_id_is_422(
    api: TestClient,
    db: Any,
    ids: dict[str, int],
    method: str,
    path: str,
    field: str,
    body: Any,
) -> None:
    requests = [
        (method, _fill(path, ids), {"json": {**_fill(body, ids), field: value}})
        for value in BAD_IDS
    ]

    assert await _all_refused(api, db, requests, 422, "INVALID_PAYLOAD") == []
    message = await refused(
        api,
        method,
        _fill(path, ids),
        422,
        "INVALID_PAYLOAD",
        json={**_fill(body, ids), field: 2**64},
    )
    assert message.startswith(f"{field}:")


@pytest.mark.parametrize(
    ("method", "path", "field", "body"), ID_FIELDS, ids=ID_FIELD_IDS
)
async def test_largest_64_bit_id_in_body_names_nothing(
    api: TestClient,
    db: Any,
    ids: dict[str, int],
    method: str,
    path: str,
    field: str,
    body: Any,
) -> None:
    message = await _refused_unchanged(
        api,
        db,
        method,
        _fill(path, ids),
        422,
        "INVALID_PAYLOAD",
        json={**_fill(body, ids), field: 2**63 - 1},
    )

    assert message.startswith(f"{field}:")


async def test_id_with_thousands_of_digits_in_body_is_422(
    api: TestClient, db: Any, ids: dict[str, int]
) -> None:
    raw = b'{"iteration_id": ' + b"9" * 5000 + b"}"

    message = await _refused_unchanged(
        api,
        db,
        "POST",
        f"/modelversion/model/{ids['model_id']}",
        422,
        "INVALID_PAYLOAD",
        data=raw,
    )

    assert message.startswith("iteration_id:")


# Page bounds -----------------------------------------------------------


LISTS = [
    "/project",
    "/experiment/project/{project_id}",
    "/iteration/experiment/{experiment_id}",
    "/resource/experiment/{experiment_id}",
    "/model/project/{project_id}",
    "/modelversion/model/{model_id}",
]


BAD_BOUNDS = ["abc", "-1", "1.5", "", " 1", "+1", "1e2", "0x10", "\uff11", "9" * 30]


@pytest.mark.parametrize("path", LISTS)
async def test_page_bound_that_is_no_non_negative_integer_is_422(
    api: TestClient, db: Any, ids: dict[str, int], path: str
) -> None:
    requests = [
        ("GET", _fill(path, ids), {"params": {name: raw}})
        for raw in BAD_BOUNDS
        for name in ("limit", "offset")
    ]

    assert await _all_refused(api, db, requests, 422, "INVALID_PAYLOAD") == []
    message = await refused(
        api, "GET", _fill(path, ids), 422, "INVALID_PAYLOAD", params={"offset": "-1"}
    )
    assert message.startswith("offset:")


@pytest.mark.parametrize("name", ["limit", "offset"])
async def test_page_bound_with_thousands_of_digits_is_422(
    api: TestClient, name: str
) -> None:
    await refused(
        api, "GET", "/project", 422, "INVALID_PAYLOAD", params={name: "9" * 5000}
    )


async def test_limit_above_200_is_capped_at_200(
    api: TestClient, ids: dict[str, int]
) -> None:
    for i in range(205):
        await make_model(api, ids["project_id"], f"m{i}")

    page = await get_json(api, f"/model/project/{ids['project_id']}?limit=1000")

    assert page["limit"] == 200
    assert len(page["data"]) == 200
    assert page["total"] == 206


async def test_limit_defaults_to_50(api: TestClient, ids: dict[str, int]) -> None:
    for i in range(55):
        await post_json(
            api, f"/iteration/experiment/{ids['experiment_id']}", {"notes": str(i)}
        )

    page = await get_json(api, f"/iteration/experiment/{ids['experiment_id']}")

    assert (page["limit"], page["offset"], len(page["data"])) == (50, 0, 50)
    assert page["total"] == 56


async def test_limit_zero_gives_an_empty_page_with_the_total(
    api: TestClient, ids: dict[str, int]
) -> None:
    page = await get_json(api, "/project?limit=0")

    assert page == {"data": [], "total": 1, "limit": 0, "offset": 0}


async def test_leading_zeros_in_page_bounds_are_fine(
    api: TestClient, ids: dict[str, int]
) -> None:
    page = await get_json(api, "/project?limit=007&offset=00")

    assert (page["limit"], page["offset"], page["total"]) == (7, 0, 1)


# Routing ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nope",
        "/model",
        "/models/1",
        "/project/",
        "/model/1/extra",
        "/modelversion/model",
        "/resource/1/bytes",
    ],
)
async def test_unknown_path_is_404_in_the_envelope(api: TestClient, path: str) -> None:
    message = await refused(api, "GET", path, 404, "NOT_FOUND")

    assert path in message


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/model/1", {"GET", "PATCH", "DELETE"}),
        ("POST", "/model/1", {"GET", "PATCH", "DELETE"}),
        ("DELETE", "/project", {"GET", "POST"}),
        ("PATCH", "/modelversion/model/1", {"GET", "POST"}),
        ("DELETE", "/resource/1/data", {"GET"}),
        ("POST", "/health", {"GET"}),
    ],
)
async def test_wrong_method_is_405_with_allow(
    api: TestClient, db: Any, method: str, path: str, allowed: set[str]
) -> None:
    before = await contents(db)

    response = await api.request(method, path, json={"name": "n"})
    body = await response.json()

    assert response.status == 405
    assert body["code"] == "METHOD_NOT_ALLOWED"
    assert method in body["message"]
    allow = {item.strip() for item in response.headers["Allow"].split(",")}
    assert allowed <= allow
    assert method not in allow
    assert await contents(db) == before


async def test_error_answers_are_json(api: TestClient) -> None:
    response = await api.get("/nope")

    assert response.content_type == "application/json"


@pytest.mark.parametrize(
    "stored",
    [
        datetime(2025, 3, 1, 12, 0, 0, 123456),
        datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        datetime(2025, 3, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
        datetime(2025, 3, 1, 7, 30, 0, 123999, tzinfo=timezone(timedelta(hours=-4.5))),
    ],
)
def test_dates_are_written_in_utc_to_the_millisecond(stored: datetime) -> None:
    # The store gives naive UTC dates (mock) or aware ones (the driver).
    project = Project.from_doc({"_id": 1, "name": "p", "created_date": stored})

    assert json.loads(project.model_dump_json())["created_date"] == (
        "2025-03-01T12:00:00.123Z"
    )
