"""Resources: artifact bytes in and out, streamed both ways.

An upload reads its source chunk by chunk; a download writes each chunk as
it arrives and checks the sha256 of the whole against the server's (the
ETag of the data route), so no artifact is ever held whole in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any, BinaryIO, overload

import aiohttp

from app.client._base import (
    MAX_LIMIT,
    Calls,
    IfMatch,
    Pagination,
    fields,
    new_id,
    new_idempotency_key,
    path_id,
)
from app.client._http import CHECKSUM_MISMATCH, IDEMPOTENCY_KEY, ClientError
from app.schemas import Page, Resource

CHUNK_BYTES = 256 * 1024

# What an upload reads from, and what a download writes to.
Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
Target = str | os.PathLike[str] | BinaryIO


class ResourceCalls(Calls):
    """The /resource routes."""

    async def get_resource(self, id: int) -> Resource | None:
        """The resource's record, or None if it does not exist or cannot be
        read."""
        return await self._record(Resource, f"/resource/{path_id(id)}")

    @overload
    async def get_resources(self, experiment_id: int) -> list[Resource]: ...
    @overload
    async def get_resources(
        self, experiment_id: int, page: Pagination
    ) -> Page[Resource]: ...
    async def get_resources(
        self, experiment_id: int, page: Pagination | None = None
    ) -> Any:
        """The first page of the experiment's resources, or the page named."""
        path = f"/resource/experiment/{path_id(experiment_id)}"
        return await self._listing(Resource, path, page)

    def iter_resources(
        self, experiment_id: int, *, page_size: int = MAX_LIMIT
    ) -> AsyncIterator[Resource]:
        """Every resource of the experiment, by id."""
        path = f"/resource/experiment/{path_id(experiment_id)}"
        return self._walk(Resource, path, page_size)

    async def create_resource(
        self,
        experiment_id: int,
        name: str,
        data: Source,
        description: str | None = None,
    ) -> int:
        """Upload ``data`` as a resource of the experiment; its id.

        ``data`` is a file path, bytes, or a binary stream open for reading
        (read from where it stands, and left open). A path or stream is
        read chunk by chunk, never whole.
        """
        path = f"/resource/experiment/{path_id(experiment_id)}"
        text = fields(name=name, description=description)
        if isinstance(data, bytes | bytearray | memoryview):
            return await self._upload(path, text, bytes(data), "data")
        if not isinstance(data, str | os.PathLike):
            return await self._upload(path, text, data, _name_of(data))

        file = Path(data)
        stream = await asyncio.to_thread(file.open, "rb")
        try:
            return await self._upload(path, text, stream, file.name)
        finally:
            await asyncio.to_thread(stream.close)

    async def download_resource(self, id: int, target: Target) -> str:
        """Write the resource's bytes to a file path or a binary stream;
        their sha256 (hex) once it matches the server's.

        A path is written through a temporary file beside it and renamed
        only after the checksum matched, so it never holds a partial or
        corrupt artifact. A stream receives the bytes as they arrive; on a
        mismatch it has them all the same and ``CHECKSUM_MISMATCH`` is raised.
        """
        if isinstance(target, str | os.PathLike):
            return await self._download_to_path(id, Path(target))
        return await self._download(id, target)

    async def update_resource(
        self,
        id: int,
        name: str | None = None,
        description: str | None = None,
        *,
        if_match: IfMatch = None,
    ) -> None:
        """Rename or describe the resource; its bytes never change."""
        body = fields(name=name, description=description)
        await self._update(f"/resource/{path_id(id)}", body, if_match)

    async def delete_resource(self, id: int, *, if_match: IfMatch = None) -> None:
        """Delete the resource and its bytes, unless a model version uses it."""
        await self._delete(f"/resource/{path_id(id)}", if_match)

    async def _upload(
        self,
        path: str,
        text: dict[str, str],
        data: bytes | IO[bytes],
        filename: str,
    ) -> int:
        start = _rewind_point(data)

        def form() -> aiohttp.FormData:
            if start is not None and not isinstance(data, bytes):
                data.seek(start)  # a repeat sends the same bytes again
            body = aiohttp.FormData()
            for key, value in text.items():
                body.add_field(key, value)
            # Bytes go as a buffer that aiohttp sends in slices, yielding
            # to the loop between them; a stream is read off the loop.
            content = io.BytesIO(data) if isinstance(data, bytes) else _chunks(data)
            # The file part goes last: the server checks the text first.
            body.add_field(
                "file",
                content,
                filename=filename,
                content_type="application/octet-stream",
            )
            return body

        # A stream that cannot go back is sent once: the key still guards
        # against a repeat by the caller, but the transport cannot retry.
        key = new_idempotency_key()
        repeatable = isinstance(data, bytes) or start is not None
        answer = await self._http.send_form(
            path,
            form,
            idempotency_key=key if repeatable else None,
            headers={} if repeatable else {IDEMPOTENCY_KEY: key},
        )
        return new_id(answer, "resource_id", self._http.describe("POST", path))

    async def _download_to_path(self, id: int, target: Path) -> str:
        partial = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
        stream = await asyncio.to_thread(partial.open, "xb")
        try:
            with stream:
                digest = await self._download(id, stream)
                await asyncio.to_thread(_flush_to_disk, stream)
            await asyncio.to_thread(os.replace, partial, target)
        except BaseException:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
            raise
        return digest

    async def _download(self, id: int, target: IO[bytes]) -> str:
        path = f"/resource/{path_id(id)}/data"
        sha256 = hashlib.sha256()
        async with self._http.stream(path) as response:
            expected = _etag(response.headers.get("ETag"))
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                sha256.update(chunk)
                await asyncio.to_thread(target.write, chunk)

        if expected is None:
            record = await self.get_resource(id)
            expected = record.content_hash if record is not None else None
        digest = sha256.hexdigest()
        if digest != expected:
            raise ClientError(
                response.status,
                CHECKSUM_MISMATCH,
                f"resource {id}: received bytes hash to {digest}, "
                f"the server recorded {expected}",
                self._http.describe("GET", path),
            )
        return digest


async def _chunks(stream: IO[bytes]) -> AsyncIterator[bytes]:
    """The stream's bytes, read off the event loop a chunk at a time."""
    while chunk := await asyncio.to_thread(stream.read, CHUNK_BYTES):
        yield chunk


def _rewind_point(data: bytes | IO[bytes]) -> int | None:
    """Where a seekable stream stands, to send it again from there."""
    if isinstance(data, bytes) or not data.seekable():
        return None
    return data.tell()


def _name_of(stream: IO[bytes]) -> str:
    """The file name a stream was opened from, or a neutral one."""
    name = getattr(stream, "name", None)
    return os.path.basename(name) if isinstance(name, str) else "data"


def _etag(value: str | None) -> str | None:
    """The sha256 an ETag header carries, weak or strong, quotes removed."""
    if value is None:
        return None
    return value.removeprefix("W/").strip('"') or None


def _flush_to_disk(stream: IO[bytes]) -> None:
    """Make the bytes durable before the rename makes them visible."""
    stream.flush()
    os.fsync(stream.fileno())
