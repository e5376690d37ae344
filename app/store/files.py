"""Resource bytes in GridFS, streamed in and out in chunks.

A resource's GridFS file has the resource's own integer id, so the bytes of
a record are found, and deleted, without a lookup.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError

from app.errors import DatabaseUnavailable, NotFound, PayloadTooLarge, RegistryError
from app.store.database import Session, Store
from app.store.errors import translated

CHUNK_BYTES = 255 * 1024
# Chunks per insert while uploading, and per batch while downloading:
# about 1 MB either way.
WRITE_BATCH_CHUNKS = 4
READ_BATCH_CHUNKS = 4


@dataclass(frozen=True)
class StoredFile:
    """What an upload wrote: its size and sha256 hex digest."""

    size_bytes: int
    content_hash: str


class FileDamaged(RegistryError):
    """A file's chunks do not add up to the file: a bug or a damaged store."""


class Hashed:
    """Counts and hashes the bytes of a stream as they pass; more than
    ``max_bytes`` of them is PayloadTooLarge."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._digest = hashlib.sha256()
        self.size = 0

    async def through(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks``, counted and hashed on their way."""
        async for chunk in chunks:
            self.size += len(chunk)
            if self.size > self._max_bytes:
                raise PayloadTooLarge(
                    f"file is larger than the limit of {self._max_bytes} bytes"
                )
            self._digest.update(chunk)
            yield chunk

    def hexdigest(self) -> str:
        """The sha256 of the bytes so far, in hex."""
        return self._digest.hexdigest()


class Files:
    """GridFS operations keyed by resource id."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def upload(
        self,
        file_id: int,
        filename: str,
        chunks: AsyncIterator[bytes],
        *,
        max_bytes: int,
        metadata: dict[str, Any],
    ) -> StoredFile:
        """Stream ``chunks`` into GridFS, hashing on the way; all or nothing.

        The GridFS chunks are written here, a few at a time, rather than
        through the driver's upload stream, which keeps up to 48 MB of every
        upload in memory before it writes (and as much again while it
        encodes them). The file's document goes last: until it exists no
        reader sees the file, and a failure removes the chunks written.
        """
        hashed = Hashed(max_bytes)
        writer = _ChunkWriter(self._store.collection("fs.chunks"), file_id)
        try:
            async for chunk in hashed.through(chunks):
                await writer.write(chunk)
            await writer.close()
            await self._store.collection("fs.files").insert_one(
                {
                    "_id": file_id,
                    "length": hashed.size,
                    "chunkSize": CHUNK_BYTES,
                    "uploadDate": datetime.now(UTC),
                    "filename": filename,
                    "metadata": metadata,
                }
            )
        except BaseException as exc:
            await self._abort(file_id)
            if isinstance(exc, ConnectionFailure | ServerSelectionTimeoutError):
                raise DatabaseUnavailable("the database is unreachable") from exc
            raise
        return StoredFile(size_bytes=hashed.size, content_hash=hashed.hexdigest())

    async def _abort(self, file_id: int) -> None:
        try:
            await self._store.collection("fs.chunks").delete_many({"files_id": file_id})
        except (ConnectionFailure, ServerSelectionTimeoutError):
            # Unreachable now; the orphaned chunks carry the resource id and
            # go with the experiment or project that owns it.
            pass

    async def download(self, file_id: int) -> AsyncIterator[bytes]:
        """The file's bytes, chunk by chunk, opened at the first read.

        Chunks are fetched READ_BATCH_CHUNKS at a time: the driver's own
        download stream takes them in batches of up to 16 MB. A chunk
        missing or out of place stops the stream with FileDamaged, so that
        nobody receives wrong bytes as if they were whole.
        """
        collection = self._store.collection
        try:
            found = await collection("fs.files").find_one(
                {"_id": file_id}, {"length": 1}
            )
            if found is None:
                raise NotFound(f"resource {file_id} has no data")
            cursor = collection("fs.chunks").find(
                {"files_id": file_id},
                {"n": 1, "data": 1},
                sort=[("n", 1)],
                batch_size=READ_BATCH_CHUNKS,
            )
            sent = number = 0
            async for chunk in cursor:
                if chunk["n"] != number:
                    raise FileDamaged(f"resource {file_id} lacks chunk {number}")
                data = bytes(chunk["data"])
                sent += len(data)
                number += 1
                yield data
            if sent != found["length"]:
                raise FileDamaged(f"resource {file_id} has {sent} of its bytes")
        except (ConnectionFailure, ServerSelectionTimeoutError) as exc:
            raise DatabaseUnavailable("the database is unreachable") from exc

    @translated
    async def delete(self, file_ids: list[int], *, session: Session = None) -> None:
        """Delete the files with these ids, and their chunks."""
        if not file_ids:
            return
        collection = self._store.collection
        await collection("fs.chunks").delete_many(
            {"files_id": {"$in": file_ids}}, session=session
        )
        await collection("fs.files").delete_many(
            {"_id": {"$in": file_ids}}, session=session
        )


class _ChunkWriter:
    """Cuts a stream of bytes into GridFS chunks of CHUNK_BYTES and inserts
    them WRITE_BATCH_CHUNKS at a time, so that an upload holds about 1 MB
    of itself in memory at any moment."""

    def __init__(self, collection: Any, file_id: int) -> None:
        self._collection = collection
        self._file_id = file_id
        self._pending = bytearray()
        self._batch: list[dict[str, Any]] = []
        self._count = 0

    async def write(self, data: bytes) -> None:
        """Take ``data``; insert the chunks it completes when a batch fills."""
        self._pending += data
        while len(self._pending) >= CHUNK_BYTES:
            self._cut(CHUNK_BYTES)
            if len(self._batch) >= WRITE_BATCH_CHUNKS:
                await self._flush()

    async def close(self) -> None:
        """Insert what is left, the last (shorter) chunk included."""
        if self._pending:
            self._cut(len(self._pending))
        await self._flush()

    def _cut(self, length: int) -> None:
        data = bytes(self._pending[:length])
        del self._pending[:length]
        self._batch.append({"files_id": self._file_id, "n": self._count, "data": data})
        self._count += 1

    async def _flush(self) -> None:
        if self._batch:
            await self._collection.insert_many(self._batch, ordered=True)
            self._batch = []
