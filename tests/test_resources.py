"""Resources over HTTP: multipart upload, download, and guarded delete."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from typing import Any

import pytest
from aiohttp import MultipartWriter, hdrs
from aiohttp.test_utils import TestClient

from app import keys
from app.settings import Settings
from app.store.files import CHUNK_BYTES, FileDamaged, Files
from tests.helpers import (
    contents,
    database,
    delete,
    get_json,
    lineage,
    make_experiment,
    make_project,
    patch_json,
    refused,
    register,
    serving,
    tick,
    upload,
)

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _form(*parts: tuple[str, str | bytes]) -> MultipartWriter:
    """A multipart/form-data body with exactly these parts, in this order."""
    writer = MultipartWriter("form-data")
    for name, value in parts:
        if isinstance(value, bytes):
            # A stream, not raw bytes: aiohttp warns about large raw bodies.
            octets = {hdrs.CONTENT_TYPE: "application/octet-stream"}
            part = writer.append(io.BytesIO(value), octets)
            part.set_content_disposition("form-data", name=name, filename="m.bin")
        else:
            part = writer.append(value)
            part.set_content_disposition("form-data", name=name)
    return writer


async def _experiment(api: TestClient) -> int:
    return await make_experiment(api, await make_project(api))


async def _stored(db: Any) -> dict[str, int]:
    return {
        name: await db[name].count_documents({})
        for name in ("resources", "fs.files", "fs.chunks")
    }


async def test_upload_records_size_and_sha256(api: TestClient) -> None:
    experiment_id = await _experiment(api)
    data = bytes(range(256)) * 40

    response = await api.post(
        f"/resource/experiment/{experiment_id}",
        data=_form(("name", "weights"), ("description", "epoch 3"), ("file", data)),
    )
    body = await response.json()

    assert response.status == 201, body
    assert response.headers["Location"] == f"/resource/{body['resource_id']}"
    resource = await get_json(api, response.headers["Location"])
    assert resource["experiment_id"] == experiment_id
    assert resource["name"] == "weights"
    assert resource["description"] == "epoch 3"
    assert resource["size_bytes"] == len(data)
    assert resource["content_hash"] == hashlib.sha256(data).hexdigest()
    assert resource["updated_date"] is None
    assert "data" not in resource


async def test_upload_trims_the_name(api: TestClient) -> None:
    experiment_id = await _experiment(api)

    response = await api.post(
        f"/resource/experiment/{experiment_id}",
        data=_form(("name", "  weights  "), ("file", b"x")),
    )

    resource = await get_json(api, response.headers["Location"])
    assert resource["name"] == "weights"


async def test_download_returns_the_bytes_with_sha256_etag(api: TestClient) -> None:
    experiment_id = await _experiment(api)
    data = b"\x00\xffcheckpoint" * 1000
    resource_id = await upload(api, experiment_id, data, name="ckpt v1.bin")

    response = await api.get(f"/resource/{resource_id}/data")

    assert response.status == 200
    assert await response.read() == data
    assert response.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Length"] == str(len(data))
    assert "ckpt%20v1.bin" in response.headers["Content-Disposition"]


async def test_matching_if_none_match_is_304(api: TestClient) -> None:
    resource_id = await upload(api, await _experiment(api), b"weights")
    etag = f'"{hashlib.sha256(b"weights").hexdigest()}"'

    response = await api.get(
        f"/resource/{resource_id}/data", headers={"If-None-Match": etag}
    )

    assert response.status == 304
    assert response.headers["ETag"] == etag
    assert await response.read() == b""


async def test_stale_if_none_match_gets_the_bytes(api: TestClient) -> None:
    resource_id = await upload(api, await _experiment(api), b"weights")
    stale = f'"{hashlib.sha256(b"older").hexdigest()}"'

    response = await api.get(
        f"/resource/{resource_id}/data", headers={"If-None-Match": stale}
    )

    assert response.status == 200
    assert await response.read() == b"weights"


async def test_empty_file_round_trips(api: TestClient) -> None:
    resource_id = await upload(api, await _experiment(api), b"")

    resource = await get_json(api, f"/resource/{resource_id}")
    response = await api.get(f"/resource/{resource_id}/data")

    assert resource["size_bytes"] == 0
    assert resource["content_hash"] == EMPTY_SHA256
    assert response.status == 200
    assert await response.read() == b""


async def test_multi_megabyte_upload_round_trips(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    data = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)
    digest = hashlib.sha256(data).hexdigest()
    experiment_id = await _experiment(api)
    posted = await api.post(
        f"/resource/experiment/{experiment_id}",
        data=_form(("name", "big"), ("file", data)),
    )
    resource_id = (await posted.json())["resource_id"]

    resource = await get_json(api, f"/resource/{resource_id}")
    response = await api.get(f"/resource/{resource_id}/data")
    received = await response.read()

    assert resource["size_bytes"] == len(data)
    assert resource["content_hash"] == digest
    # Compared by digest: a failing byte comparison would print megabytes.
    assert (len(received), hashlib.sha256(received).hexdigest()) == (
        len(data),
        digest,
    )
    chunks = await database(mongo, settings)["fs.chunks"].count_documents({})
    assert chunks == -(-len(data) // (255 * 1024))


async def test_resource_list_pages_in_id_order(api: TestClient) -> None:
    experiment_id = await _experiment(api)
    ids = [await upload(api, experiment_id, b"x", name=f"r{i}") for i in range(3)]

    page = await get_json(api, f"/resource/experiment/{experiment_id}?limit=2")

    assert [r["id"] for r in page["data"]] == ids[:2]
    assert page["total"] == 3


async def test_patch_renames_a_resource_and_keeps_its_bytes(api: TestClient) -> None:
    resource_id = await upload(api, await _experiment(api), b"bytes")
    await patch_json(api, f"/resource/{resource_id}", {"name": "first"})
    first = await get_json(api, f"/resource/{resource_id}")
    await tick()

    await patch_json(api, f"/resource/{resource_id}", {"description": "d"})

    second = await get_json(api, f"/resource/{resource_id}")
    assert second["name"] == "first"
    assert second["updated_date"] > first["updated_date"]
    assert second["content_hash"] == hashlib.sha256(b"bytes").hexdigest()
    assert await (await api.get(f"/resource/{resource_id}/data")).read() == b"bytes"


@pytest.mark.parametrize(
    ("parts", "field"),
    [
        pytest.param([("name", "w")], "file", id="no-file-part"),
        pytest.param(
            [("name", "w"), ("owner", "me"), ("file", b"x")], "owner", id="unknown"
        ),
        pytest.param(
            [("name", "w"), ("file", b"x" * 300_000), ("description", "d")],
            "file",
            id="file-not-last",
        ),
        pytest.param(
            [("name", "w"), ("file", b"x" * 300_000), ("file", b"y")],
            "file",
            id="two-files",
        ),
        pytest.param(
            [("name", "a"), ("name", "b"), ("file", b"x")], "name", id="name-twice"
        ),
        pytest.param([("description", "d"), ("file", b"x")], "name", id="no-name"),
        pytest.param([("file", b"x"), ("name", "w")], "name", id="file-first"),
        pytest.param([("name", "   "), ("file", b"x")], "name", id="blank-name"),
        pytest.param([("name", "a\x07b"), ("file", b"x")], "name", id="control"),
        pytest.param([("name", "w" * 257), ("file", b"x")], "name", id="long-name"),
        pytest.param(
            [("name", "w"), ("description", "d" * 65_537), ("file", b"x")],
            "description",
            id="long-description",
        ),
        pytest.param(
            [("name", "w"), ("description", b"\xff\xfe"), ("file", b"x")],
            "description",
            id="description-not-utf8",
        ),
    ],
)
async def test_malformed_upload_is_422_and_stores_nothing(
    api: TestClient,
    mongo: Any,
    settings: Settings,
    parts: list[tuple[str, str | bytes]],
    field: str,
) -> None:
    db = database(mongo, settings)
    experiment_id = await _experiment(api)
    before = await contents(db)

    message = await refused(
        api,
        "POST",
        f"/resource/experiment/{experiment_id}",
        422,
        "INVALID_PAYLOAD",
        data=_form(*parts),
    )

    assert message.startswith(f"{field}:"), message
    assert await contents(db) == before
    assert await _stored(db) == {"resources": 0, "fs.files": 0, "fs.chunks": 0}


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"json": {"name": "w", "file": "eA=="}}, id="json"),
        pytest.param({"data": {"name": "w", "file": "x"}}, id="urlencoded"),
        pytest.param({"data": b""}, id="empty"),
        pytest.param(
            {
                "data": b"--nope\r\n",
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
            },
            id="broken-multipart",
        ),
        pytest.param(
            {"data": b"x", "headers": {"Content-Type": "multipart/form-data"}},
            id="no-boundary",
        ),
    ],
)
async def test_non_multipart_upload_is_422_and_stores_nothing(
    api: TestClient, mongo: Any, settings: Settings, kwargs: dict[str, Any]
) -> None:
    db = database(mongo, settings)
    experiment_id = await _experiment(api)

    await refused(
        api,
        "POST",
        f"/resource/experiment/{experiment_id}",
        422,
        "INVALID_PAYLOAD",
        **kwargs,
    )

    assert await _stored(db) == {"resources": 0, "fs.files": 0, "fs.chunks": 0}


async def test_upload_to_missing_experiment_is_404_and_stores_nothing(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    await refused(
        api,
        "POST",
        "/resource/experiment/42",
        404,
        "NOT_FOUND",
        data=_form(("name", "w"), ("file", b"x" * 1000)),
    )

    assert await _stored(database(mongo, settings)) == {
        "resources": 0,
        "fs.files": 0,
        "fs.chunks": 0,
    }


async def test_upload_over_the_limit_is_413_and_stores_nothing(
    settings: Settings, mongo: Any
) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 1024})
    async with serving(small, mongo) as api:
        experiment_id = await _experiment(api)

        await refused(
            api,
            "POST",
            f"/resource/experiment/{experiment_id}",
            413,
            "PAYLOAD_TOO_LARGE",
            data=_form(("name", "w"), ("file", b"x" * 300_000)),
        )

    assert await _stored(database(mongo, settings)) == {
        "resources": 0,
        "fs.files": 0,
        "fs.chunks": 0,
    }


@pytest.mark.parametrize("suffix", ["", "/data"])
@pytest.mark.parametrize("raw", ["999", "abc", "0", "18446744073709551616"])
async def test_missing_or_malformed_resource_id_is_404(
    api: TestClient, suffix: str, raw: str
) -> None:
    await upload(api, await _experiment(api), b"x")

    await refused(api, "GET", f"/resource/{raw}{suffix}", 404, "NOT_FOUND")


async def test_unreferenced_delete_removes_record_and_bytes(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    db = database(mongo, settings)
    experiment_id = await _experiment(api)
    kept = await upload(api, experiment_id, b"k" * 300_000)
    doomed = await upload(api, experiment_id, b"d" * 300_000)

    body = await delete(api, f"/resource/{doomed}")

    assert body == {"message": "OK"}
    await refused(api, "GET", f"/resource/{doomed}", 404, "NOT_FOUND")
    await refused(api, "GET", f"/resource/{doomed}/data", 404, "NOT_FOUND")
    assert await db["fs.files"].count_documents({"_id": doomed}) == 0
    assert await db["fs.chunks"].count_documents({"files_id": doomed}) == 0
    assert await db["fs.chunks"].count_documents({"files_id": kept}) == 2
    assert await (await api.get(f"/resource/{kept}/data")).read() == b"k" * 300_000


@pytest.mark.parametrize("how", ["registered", "patched"])
async def test_delete_of_a_version_artifact_is_409_and_keeps_bytes(
    api: TestClient, mongo: Any, settings: Settings, how: str
) -> None:
    db = database(mongo, settings)
    ids = await lineage(api)
    resource_id = await upload(api, ids["experiment_id"], b"weights")
    if how == "registered":
        await register(
            api, ids["model_id"], ids["iteration_id"], resource_id=resource_id
        )
    else:
        version_id = await register(api, ids["model_id"], ids["iteration_id"])
        await patch_json(
            api, f"/modelversion/{version_id}", {"resource_id": resource_id}
        )
    before = await contents(db)

    message = await refused(api, "DELETE", f"/resource/{resource_id}", 409, "CONFLICT")

    assert str(resource_id) in message
    assert await contents(db) == before
    response = await api.get(f"/resource/{resource_id}/data")
    assert response.status == 200
    assert await response.read() == b"weights"


@pytest.mark.parametrize("header", ["*", 'W/"{etag}"', '"other", "{etag}"'])
async def test_if_none_match_forms_that_match_are_304(
    api: TestClient, header: str
) -> None:
    resource_id = await upload(api, await _experiment(api), b"weights")
    etag = hashlib.sha256(b"weights").hexdigest()

    response = await api.get(
        f"/resource/{resource_id}/data",
        headers={"If-None-Match": header.format(etag=etag)},
    )
    body = await response.read()

    assert (response.status, body) == (304, b"")


async def test_client_hanging_up_mid_download_is_no_server_error(
    api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Larger than the socket buffers, so the server is still writing.
    form = _form(("name", "big"), ("file", b"x" * 32_000_000))
    created = await api.post(
        f"/resource/experiment/{await _experiment(api)}", data=form
    )
    resource_id = (await created.json())["resource_id"]
    caplog.set_level(logging.INFO, logger="deardiary")

    response = await api.get(f"/resource/{resource_id}/data")
    await response.content.readexactly(1024)
    response.close()

    # Wait for the server to notice: it logs the abandoned download (or,
    # without a guard, an unhandled error).
    for _ in range(200):
        if any(r.name.startswith("deardiary.http") for r in caplog.records):
            break
        await asyncio.sleep(0.025)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


@pytest.mark.parametrize(
    "size",
    [1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 7],
)
async def test_sizes_around_chunk_bounds_round_trip_in_whole_chunks(
    api: TestClient, mongo: Any, settings: Settings, size: int
) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    resource_id = await upload(api, await _experiment(api), data)

    response = await api.get(f"/resource/{resource_id}/data")
    received = await response.read()

    assert received == data
    chunks = database(mongo, settings)["fs.chunks"]
    numbers = [doc["n"] async for doc in chunks.find({}).sort("n", 1)]
    assert numbers == list(range(-(-size // CHUNK_BYTES)))
    assert await chunks.count_documents({"data": {"$exists": True}}) == len(numbers)


async def test_download_of_a_file_missing_a_chunk_stops_short(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    resource_id = await upload(api, await _experiment(api), b"x" * 3 * CHUNK_BYTES)
    await database(mongo, settings)["fs.chunks"].delete_one({"n": 1})
    files = Files(api.app[keys.SERVICES].store)

    received = []
    with pytest.raises(FileDamaged, match="lacks chunk 1"):
        async for chunk in files.download(resource_id):
            received.append(chunk)

    assert received == [b"x" * CHUNK_BYTES]


async def test_download_of_a_file_cut_short_stops_short(
    api: TestClient, mongo: Any, settings: Settings
) -> None:
    resource_id = await upload(api, await _experiment(api), b"x" * 2 * CHUNK_BYTES)
    await database(mongo, settings)["fs.chunks"].delete_one({"n": 1})
    files = Files(api.app[keys.SERVICES].store)

    with pytest.raises(FileDamaged, match="has 261120 of its bytes"):
        async for _ in files.download(resource_id):
            pass
