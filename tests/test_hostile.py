"""Hostile input, beyond what the fuzzer generates.

Each request below must get its 4xx in the error envelope, change nothing
in the database, and leave the server answering. Some are sent as raw bytes
over a socket, since an HTTP client would refuse to send them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from app.schemas import MAX_ID
from app.settings import Settings
from tests.helpers import contents, database, lineage, refused, register, upload

TIMEOUT_S = 10
BOUNDARY = "hostile-boundary"


@pytest.fixture
async def ids(api: TestClient) -> dict[str, int]:
    ids = await lineage(api)
    ids["resource_id"] = await upload(api, ids["experiment_id"], b"weights")
    ids["version_id"] = await register(api, ids["model_id"], ids["iteration_id"])
    return ids


@pytest.fixture
async def unchanged(
    api: TestClient, ids: dict[str, int], mongo: Any, settings: Settings
) -> AsyncIterator[None]:
    """The database after the test is as before it, and the server is up."""
    db = database(mongo, settings)
    before = await contents(db)
    yield
    assert await contents(db) == before
    assert (await api.get(f"/model/{ids['model_id']}")).status == 200
    assert (await api.get("/health")).status == 200


# Raw HTTP ---------------------------------------------------------------


async def _raw(api: TestClient, request: bytes, body_parts: int = 0) -> Any:
    """Send ``request`` as it is and read the answer: status, envelope."""
    assert api.server.host is not None and api.server.port is not None
    reader, writer = await asyncio.open_connection(api.server.host, api.server.port)
    try:
        writer.write(request)
        await asyncio.wait_for(writer.drain(), TIMEOUT_S)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
        status = int(head.split(b" ", 2)[1])
        length = _content_length(head)
        body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT_S)
        return status, json.loads(body)
    finally:
        writer.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise AssertionError(f"no Content-Length in {head!r}")


def _post(path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _envelope(payload: Any, code: str) -> None:
    assert set(payload) == {"code", "message"}, payload
    assert payload["code"] == code, payload


# Size -----------------------------------------------------------------------


async def test_100_mb_json_body_is_refused_before_it_is_read(
    api: TestClient, ids: dict[str, int], unchanged: None
) -> None:
    # Only the headers go out: the answer must come without the body.
    request = _post(
        "/project",
        {"Content-Type": "application/json", "Content-Length": str(100 * 2**20)},
    )

    status, payload = await _raw(api, request)

    assert status == 413
    _envelope(payload, "PAYLOAD_TOO_LARGE")


async def test_chunked_body_past_the_limit_is_refused_while_it_streams(
    api: TestClient, ids: dict[str, int], settings: Settings, unchanged: None
) -> None:
    # Twice the limit in chunks, and no last chunk: the body never ends, so
    # an answer proves the server stopped reading at the limit.
    chunk = b"[" * 4096
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(chunk), chunk)
        for _ in range(2 * settings.max_body_bytes // len(chunk))
    )
    request = _post(
        "/project",
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        chunks,
    )

    status, payload = await _raw(api, request)

    assert status == 413
    _envelope(payload, "PAYLOAD_TOO_LARGE")


# Structure and encoding ------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        b'{"name": "n", "x": ' + b'{"a": ' * 6_000 + b"1" + b"}" * 6_001,
        b'{"name": ' + b"[" * 20_000,
    ],
    ids=["arrays", "objects", "unclosed"],
)
async def test_deeply_nested_json_is_400(
    api: TestClient, ids: dict[str, int], body: bytes, unchanged: None
) -> None:
    await refused(
        api, "POST", "/project", 400, "INVALID_JSON", data=body, headers=_json()
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "caf\xe9"}',  # Latin-1
        '{"name": "café"}'.encode("utf-16"),
        '{"name": "café"}'.encode("utf-32"),
        b'{"name": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"name": "\xc0\xae"}',  # an overlong form
        b"\xef\xbb\xbf" + b'{"name": "bom"}',
    ],
    ids=["latin-1", "utf-16", "utf-32", "surrogate", "overlong", "bom"],
)
async def test_body_that_is_not_utf8_json_is_400(
    api: TestClient, ids: dict[str, int], body: bytes, unchanged: None
) -> None:
    await refused(
        api, "POST", "/project", 400, "INVALID_JSON", data=body, headers=_json()
    )


async def test_non_utf8_bytes_in_path_query_and_headers_are_refused(
    api: TestClient, ids: dict[str, int], unchanged: None
) -> None:
    project = ids["project_id"]
    body = b'{"name": "n"}'
    cases = [
        (b"GET /model/%FF%FE HTTP/1.1", 404, "NOT_FOUND"),
        (f"GET /model/project/{project}?limit=%FF HTTP/1.1".encode(), 422, None),
        (
            b"POST /project HTTP/1.1\r\nIdempotency-Key: \xff\xfe\r\n"
            b"Content-Type: application/json\r\nContent-Length: 13",
            422,
            "INVALID_PAYLOAD",
        ),
    ]

    for head, status, code in cases:
        request = head + b"\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        answer, payload = await _raw(api, request + (body if b"POST" in head else b""))

        assert answer == status, (head, payload)
        _envelope(payload, code or "INVALID_PAYLOAD")


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "a\\udc00b"])
async def test_escaped_lone_surrogate_is_400_not_a_database_error(
    api: TestClient, ids: dict[str, int], escape: str, unchanged: None
) -> None:
    # Valid JSON, but no UTF-8 string: MongoDB cannot store it.
    body = f'{{"name": "ok", "description": "{escape}"}}'.encode()

    await refused(
        api, "POST", "/project", 400, "INVALID_JSON", data=body, headers=_json()
    )


async def test_duplicate_json_keys_are_400(
    api: TestClient, ids: dict[str, int], unchanged: None
) -> None:
    body = b'{"stage_id": 1, "stage_id": 3}'

    await refused(
        api,
        "PATCH",
        f"/modelversion/{ids['version_id']}",
        400,
        "INVALID_JSON",
        data=body,
        headers=_json(),
    )


@pytest.mark.parametrize(
    "name",
    [
        "a\x00b",
        "\x00",
        "tab\there",
        "line\nbreak",
        "esc\x1b[31m",
        "del\x7fx",
        "c1\x85x",
    ],
)
async def test_control_characters_in_names_are_422(
    api: TestClient, ids: dict[str, int], name: str, unchanged: None
) -> None:
    message = await refused(
        api, "POST", "/project", 422, "INVALID_PAYLOAD", json={"name": name}
    )

    assert "name" in message


async def test_raw_nul_byte_in_a_json_string_is_400(
    api: TestClient, ids: dict[str, int], unchanged: None
) -> None:
    await refused(
        api,
        "POST",
        "/project",
        400,
        "INVALID_JSON",
        data=b'{"name": "a\x00b"}',
        headers=_json(),
    )


async def test_control_characters_in_upload_names_are_422(
    api: TestClient, ids: dict[str, int], unchanged: None
) -> None:
    form = FormData()
    form.add_field("name", "weights\x00.bin")
    form.add_field("file", b"bytes", filename="w.bin")

    await refused(
        api,
        "POST",
        f"/resource/experiment/{ids['experiment_id']}",
        422,
        "INVALID_PAYLOAD",
        data=form,
    )


# Numbers beyond 64 bits -----------------------------------------------------


@pytest.mark.parametrize(
    "number", [str(MAX_ID + 1), str(2**64), "9" * 30, "9" * 5000, "0" * 30 + "1"]
)
async def test_path_id_beyond_64_bits_is_404(
    api: TestClient, ids: dict[str, int], number: str, unchanged: None
) -> None:
    for method, path in [
        ("GET", f"/model/{number}"),
        ("GET", f"/model/{number}/production"),
        ("PATCH", f"/model/{number}"),
        ("DELETE", f"/modelversion/{number}"),
        ("GET", f"/userpermission/user/{number}/project/1"),
    ]:
        await refused(api, method, path, 404, "NOT_FOUND", json={})


@pytest.mark.parametrize(
    "number", [MAX_ID + 1, 2**64, -(2**64), 10**400, 1e300, 2**63 - 0.5]
)
async def test_body_id_beyond_64_bits_is_422(
    api: TestClient, ids: dict[str, int], number: float, unchanged: None
) -> None:
    body = json.dumps({"iteration_id": number}).encode()

    message = await refused(
        api,
        "POST",
        f"/modelversion/model/{ids['model_id']}",
        422,
        "INVALID_PAYLOAD",
        data=body,
        headers=_json(),
    )

    assert "iteration_id" in message


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400", b"1" * 5000 + b".5"])
async def test_numbers_no_float_can_hold_are_refused(
    api: TestClient, ids: dict[str, int], literal: bytes, unchanged: None
) -> None:
    body = b'{"stage_id": ' + literal + b"}"

    response = await api.patch(
        f"/modelversion/{ids['version_id']}", data=body, headers=_json()
    )
    payload = await response.json()

    assert response.status in (400, 422), payload
    assert set(payload) == {"code", "message"}


@pytest.mark.parametrize("query", ["limit=" + "9" * 25, "offset=" + "9" * 25])
async def test_page_bound_beyond_64_bits_is_422(
    api: TestClient, ids: dict[str, int], query: str, unchanged: None
) -> None:
    path = f"/model/project/{ids['project_id']}?{query}"

    await refused(api, "GET", path, 422, "INVALID_PAYLOAD")


async def test_if_match_revision_beyond_64_bits_matches_nothing(
    api: TestClient, ids: dict[str, int], unchanged: None
) -> None:
    tag = f'"{ids["model_id"]}-{"9" * 40}"'

    await refused(
        api,
        "PATCH",
        f"/model/{ids['model_id']}",
        412,
        "PRECONDITION_FAILED",
        json={"description": "changed"},
        headers={"If-Match": tag},
    )


# Uploads --------------------------------------------------------------------


async def test_upload_without_a_file_part_is_422(
    api: TestClient, ids: dict[str, int], unchanged: None
) -> None:
    form = FormData()
    form.add_field("name", "weights")
    form.add_field("description", "no bytes")

    message = await refused(
        api,
        "POST",
        f"/resource/experiment/{ids['experiment_id']}",
        422,
        "INVALID_PAYLOAD",
        data=form,
    )

    assert "file" in message


@pytest.mark.parametrize("cut", ["in the file", "before the end", "in a header"])
async def test_truncated_upload_is_refused_and_stores_nothing(
    api: TestClient, ids: dict[str, int], cut: str, unchanged: None
) -> None:
    whole = _multipart({"name": "weights"}, b"\x01" * 100_000)
    stop = {
        "in the file": len(whole) // 2,
        "before the end": len(whole) - len(f"--{BOUNDARY}--\r\n"),
        "in a header": whole.index(b"filename") + 3,
    }[cut]
    body = whole[:stop]
    request = _post(
        f"/resource/experiment/{ids['experiment_id']}",
        {
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(len(body)),
        },
        body,
    )

    status, payload = await _raw(api, request)

    assert status == 422, payload
    _envelope(payload, "INVALID_PAYLOAD")


@pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionHeader")
async def test_upload_with_a_garbled_disposition_is_422_when_it_only_warns(
    api: TestClient, ids: dict[str, int], unchanged: None
) -> None:
    body = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; fil\r\n\r\n'
        f"bytes\r\n--{BOUNDARY}--\r\n"
    ).encode()

    await refused(
        api,
        "POST",
        f"/resource/experiment/{ids['experiment_id']}",
        422,
        "INVALID_PAYLOAD",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )


async def test_upload_abandoned_by_the_client_stores_nothing(
    api: TestClient, ids: dict[str, int], unchanged: None
) -> None:
    whole = _multipart({"name": "weights"}, b"\x01" * 1_000_000)
    request = _post(
        f"/resource/experiment/{ids['experiment_id']}",
        {
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(len(whole)),
        },
        whole[: len(whole) // 2],
    )
    assert api.server.host is not None and api.server.port is not None
    _, writer = await asyncio.open_connection(api.server.host, api.server.port)
    writer.write(request)
    await writer.drain()

    writer.close()
    await writer.wait_closed()
    # Let the server notice the hang-up and clean up before the checks.
    for _ in range(50):
        await asyncio.sleep(0.01)


async def test_upload_with_a_malformed_part_header_is_422(
    api: TestClient, ids: dict[str, int], unchanged: None
) -> None:
    # A control character in a part's header line: aiohttp's parser
    # refuses it with an error of its own, once a 500.
    body = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="na\x1fme"\r\n\r\n'
        f"weights\r\n--{BOUNDARY}--\r\n"
    ).encode()

    await refused(
        api,
        "POST",
        f"/resource/experiment/{ids['experiment_id']}",
        422,
        "INVALID_PAYLOAD",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )


def _multipart(fields: dict[str, str], data: bytes) -> bytes:
    parts = [
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="{name}"\r\n\r\n'
        f"{value}\r\n".encode()
        for name, value in fields.items()
    ]
    parts.append(
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="w.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return b"".join(parts)


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}


# Encodings the server cannot undo --------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_json_body_that_does_not_decompress_is_400(
    api: TestClient, ids: dict[str, int], encoding: str, unchanged: None
) -> None:
    body = b"this is not compressed data at all"
    headers = {**_json(), "Content-Encoding": encoding}

    message = await refused(
        api, "POST", "/project", 400, "INVALID_JSON", data=body, headers=headers
    )

    assert message == f"the request body could not be decoded as {encoding} data"


async def test_upload_that_does_not_decompress_is_422_and_stores_nothing(
    api: TestClient, ids: dict[str, int], unchanged: None
) -> None:
    body = b"\x1f\x8b\x08\x00" + b"\x00garbage" * 1000
    request = _post(
        f"/resource/experiment/{ids['experiment_id']}",
        {
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Encoding": "gzip",
            "Content-Length": str(len(body)),
        },
        body,
    )

    status, payload = await _raw(api, request)

    assert status == 422, payload
    _envelope(payload, "INVALID_PAYLOAD")
