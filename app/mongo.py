"""The one module that imports the MongoDB driver's async API.

motor 3.7 is its last release; keeping every motor import here makes a later
move to PyMongo's own async API a change to this file alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from motor.motor_asyncio import (
    AsyncIOMotorClient,
    AsyncIOMotorClientSession,
    AsyncIOMotorDatabase,
)
from pymongo import monitoring

from app.metrics import observe_command

Client = AsyncIOMotorClient
Database = AsyncIOMotorDatabase
Session = AsyncIOMotorClientSession


def open_client(uri: str, *, timeout_ms: int) -> Any:
    """A client for ``uri`` that gives up on an unreachable server in time."""
    return AsyncIOMotorClient(
        uri,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 6, 30_000),
        uuidRepresentation="standard",
        event_listeners=[CommandTimer()],
    )


class CommandTimer(monitoring.CommandListener):
    """Feeds the duration of every MongoDB command to the metrics.

    The driver calls it on its own threads; only names and durations are
    read from the events, never the commands or replies.
    """

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Nothing to do: the end events carry the duration."""

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Record a command that succeeded."""
        observe_command(event.command_name, True, event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Record a command that failed."""
        observe_command(event.command_name, False, event.duration_micros / 1e6)


@dataclass(frozen=True)
class ServerFeatures:
    """What the server can do beyond plain commands on one collection."""

    # A replica set member or a mongos router.
    transactions: bool = False
    # $lookup sub-pipelines whose equality matches use indexes (5.0+).
    joins: bool = False
    # One bulkWrite command across collections (8.0+).
    bulk_writes: bool = False


# maxWireVersion of the first MongoDB releases with each feature.
JOINS_WIRE_VERSION = 13  # 5.0
BULK_WRITE_WIRE_VERSION = 25  # 8.0


async def server_features(client: Any) -> ServerFeatures:
    """What the server behind ``client`` supports, from its hello reply."""
    try:
        hello = await client.admin.command("hello")
    except NotImplementedError:
        # An in-process mock that cannot describe its topology has no
        # sessions, no $lookup sub-pipelines and no bulkWrite either.
        return ServerFeatures()
    wire = int(hello.get("maxWireVersion", 0))
    return ServerFeatures(
        transactions=bool(hello.get("setName")) or hello.get("msg") == "isdbgrid",
        joins=wire >= JOINS_WIRE_VERSION,
        bulk_writes=wire >= BULK_WRITE_WIRE_VERSION,
    )
