"""Resource bytes in GridFS, streamed in and out in chunks.

A resource's GridFS file has the resource's own integer id, so the bytes of
a record are found, and deleted, without a lookup.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gridfs.errors import NoFile
from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError

from app.errors import DatabaseUnavailable, NotFound, PayloadTooLarge
from app.store.database import Session, Store, translated

CHUNK_BYTES = 255 * 1024


@dataclass(frozen=True)
class StoredFile:
    """What an upload wrote: its size and sha256 hex digest."""

    size_bytes: int
    content_hash: str


class Files:
    """GridFS operations keyed by resource id."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._bucket = store.bucket

    async def upload(
        self,
        file_id: int,
        filename: str,
        chunks: AsyncIterator[bytes],
        *,
        max_bytes: int,
        metadata: dict[str, Any],
    ) -> StoredFile:
        """Stream ``chunks`` into GridFS, hashing on the way; all or nothing."""
        digest = hashlib.sha256()
        size = 0
        stream = self._bucket.open_upload_stream_with_id(
            file_id, filename, chunk_size_bytes=CHUNK_BYTES, metadata=metadata
        )
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"file is larger than the limit of {max_bytes} bytes"
                    )
                digest.update(chunk)
                await stream.write(chunk)
            await stream.close()
        except BaseException as exc:
            await self._abort(stream)
            if isinstance(exc, ConnectionFailure | ServerSelectionTimeoutError):
                raise DatabaseUnavailable("the database is unreachable") from exc
            raise
        return StoredFile(size_bytes=size, content_hash=digest.hexdigest())

    async def _abort(self, stream: Any) -> None:
        try:
            await stream.abort()
        except (ConnectionFailure, ServerSelectionTimeoutError):
            # Unreachable now; the orphaned chunks carry the resource id and
            # go with the experiment or project that owns it.
            pass

    async def download(self, file_id: int) -> AsyncIterator[bytes]:
        """The file's bytes, chunk by chunk, opened at the first read."""
        try:
            stream = await self._bucket.open_download_stream(file_id)
            while chunk := await stream.readchunk():
                yield chunk
        except NoFile as exc:
            raise NotFound(f"resource {file_id} has no data") from exc
        except (ConnectionFailure, ServerSelectionTimeoutError) as exc:
            raise DatabaseUnavailable("the database is unreachable") from exc

    @translated
    async def delete(self, file_ids: list[int], *, session: Session = None) -> None:
        """Delete the files with these ids, and their chunks."""
        if not file_ids:
            return
        db = self._store.db
        await db["fs.chunks"].delete_many(
            {"files_id": {"$in": file_ids}}, session=session
        )
        await db["fs.files"].delete_many({"_id": {"$in": file_ids}}, session=session)
