"""The one module that imports the MongoDB driver's async API.

motor 3.7 is its last release; keeping every motor import here makes a later
move to PyMongo's own async API a change to this file alone.
"""

from __future__ import annotations

from typing import Any

from motor.motor_asyncio import (
    AsyncIOMotorClient,
    AsyncIOMotorClientSession,
    AsyncIOMotorDatabase,
    AsyncIOMotorGridFSBucket,
)

Client = AsyncIOMotorClient
Database = AsyncIOMotorDatabase
Session = AsyncIOMotorClientSession
GridFSBucket = AsyncIOMotorGridFSBucket


def open_client(uri: str, *, timeout_ms: int) -> Any:
    """A client for ``uri`` that gives up on an unreachable server in time."""
    return AsyncIOMotorClient(
        uri,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 6, 30_000),
        uuidRepresentation="standard",
    )


def gridfs_bucket(db: Any) -> Any:
    """The GridFS bucket that holds resource bytes."""
    return AsyncIOMotorGridFSBucket(db, bucket_name="fs")


async def supports_transactions(client: Any) -> bool:
    """True when the server is a replica set member or a mongos router."""
    try:
        hello = await client.admin.command("hello")
    except NotImplementedError:
        # An in-process mock that cannot describe its topology has no
        # sessions either.
        return False
    return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
