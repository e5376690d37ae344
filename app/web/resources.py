"""Resource bytes over HTTP: multipart upload and download, both streamed.

The upload's text parts (``name``, ``description``) come before its
``file`` part, which comes last, so the record is validated before a byte
is stored; the bytes then flow to GridFS chunk by chunk.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from urllib.parse import quote

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader

from app import keys
from app.errors import InvalidPayload
from app.schemas import DESCRIPTION_MAX, ResourceCreate
from app.services.idempotency import Answer
from app.store.files import CHUNK_BYTES, Hashed
from app.web import responses
from app.web.handlers import actor, service
from app.web.idempotency import once
from app.web.parsing import path_id, validate

log = logging.getLogger("deardiary.http")

TEXT_FIELDS = frozenset({"name", "description"})
# What aiohttp's multipart reader raises for a malformed body: a bad
# boundary, a bad or oversized part header. A garbled Content-Disposition
# is only a warning (the part then has no name), unless warnings are errors.
_MALFORMED = (
    ValueError,
    AssertionError,
    HttpProcessingError,
    BadContentDispositionHeader,
)
# Four bytes a character at most, plus slack for the longest text field.
TEXT_PART_MAX = DESCRIPTION_MAX * 4 + 1024


async def upload(request: web.Request) -> web.StreamResponse:
    """POST /resource/experiment/{id}: store a file and its record."""
    experiment_id = path_id(request, "experiment")
    reader = await _multipart(request)
    fields, file_part = await _text_fields(reader)
    body = validate(ResourceCreate, fields)
    create = service(request, "resources").create

    def answer(resource_id: int) -> web.Response:
        location = f"/resource/{resource_id}"
        return responses.created(request, "resource", resource_id, location)

    async def same_file(first: Answer) -> bool:
        resource_id = int(json.loads(first.body)["resource_id"])
        stored = await service(request, "resources").stored_hash(resource_id)
        sent = await _sha256(_file_chunks(file_part, reader), max_bytes)
        # A resource deleted since keeps no hash to compare: the first
        # answer stands.
        return stored is None or stored == sent

    max_bytes = request.app[keys.SETTINGS].max_upload_bytes
    return await once(
        request,
        body,
        lambda: create(
            actor(request),
            experiment_id,
            body,
            _file_chunks(file_part, reader),
            max_bytes=max_bytes,
        ),
        answer,
        same_rest=same_file,
    )


async def _sha256(chunks: AsyncIterator[bytes], max_bytes: int) -> str:
    """The hex sha256 of ``chunks``, read to the end but not kept."""
    hashed = Hashed(max_bytes)
    async for _ in hashed.through(chunks):
        pass
    return hashed.hexdigest()


async def download(request: web.Request) -> web.StreamResponse:
    """GET /resource/{id}/data: the bytes, with the sha256 as ETag."""
    resource, chunks = await service(request, "resources").open(
        actor(request), path_id(request, "resource")
    )
    etag = resource.content_hash
    if any(tag.value in (etag, "*") for tag in request.if_none_match or ()):
        return web.Response(status=304, headers={"ETag": f'"{etag}"'})

    response = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": _attachment(resource.name),
            "ETag": f'"{etag}"',
        }
    )
    response.content_length = resource.size_bytes
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except ConnectionResetError:
        # The client hung up; there is nobody left to tell.
        log.info("download of resource %d abandoned by the client", resource.id)
        return response
    await response.write_eof()
    return response


def _attachment(name: str) -> str:
    return f"attachment; filename*=UTF-8''{quote(name)}"


async def _multipart(request: web.Request) -> MultipartReader:
    if not request.content_type.startswith("multipart/"):
        raise InvalidPayload("body must be multipart/form-data with a file part")
    try:
        return await request.multipart()
    except _MALFORMED as exc:
        raise InvalidPayload("body is not valid multipart/form-data") from exc


async def _text_fields(
    reader: MultipartReader,
) -> tuple[dict[str, str], BodyPartReader]:
    """The text parts before the file part, and the file part itself."""
    fields: dict[str, str] = {}
    while True:
        part = await _next_part(reader)
        if part is None:
            raise InvalidPayload("file: a file part is required")
        if part.name == "file":
            return fields, part
        if part.name not in TEXT_FIELDS:
            raise InvalidPayload(f"{part.name}: unknown field")
        if part.name in fields:
            raise InvalidPayload(f"{part.name}: given twice")
        fields[part.name] = await _read_text(part)


async def _next_part(reader: MultipartReader) -> BodyPartReader | None:
    try:
        part = await reader.next()
    except _MALFORMED as exc:
        raise InvalidPayload("body is not valid multipart/form-data") from exc
    if part is not None and not isinstance(part, BodyPartReader):
        raise InvalidPayload("nested multipart bodies are not accepted")
    return part


async def _read_text(part: BodyPartReader) -> str:
    raw = bytearray()
    while chunk := await part.read_chunk(CHUNK_BYTES):
        raw.extend(chunk)
        if len(raw) > TEXT_PART_MAX:
            raise InvalidPayload(f"{part.name}: too long")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"{part.name}: must be UTF-8 text") from exc


async def _file_chunks(
    part: BodyPartReader, reader: MultipartReader
) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK_BYTES):
        yield chunk
    if await _next_part(reader) is not None:
        raise InvalidPayload("file: the file part must be the last part")
