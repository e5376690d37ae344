"""A Python client of the registry: every route as a typed call.

    from app.client import connect, connect_sync

    async with connect("http://127.0.0.1:9000") as client:
        version = await client.get_modelversion(7)

    with connect_sync("http://127.0.0.1:9000") as client:
        version = client.get_modelversion(7)

Answers are the server's own pydantic records (`app.schemas`). Getters
answer None on 404; every other failure raises `ClientError` with the
status, the registry's error code and its message.

Writes are safe to retry: every create and update carries an
``Idempotency-Key``, and the client repeats it after a dropped connection
or a 503. Updates and deletes take ``if_match=record`` (or an ETag) and
then fail with 412 PRECONDITION_FAILED if the record changed meanwhile.
"""

from app.client._base import Pagination
from app.client._client import Client, IterationRun, connect
from app.client._http import ClientError
from app.client._sync import SyncClient, SyncIterationRun, connect_sync
from app.schemas import (
    EventKind,
    Experiment,
    ExperimentStatus,
    Iteration,
    IterationStatus,
    Model,
    ModelVersion,
    ModelVersionEvent,
    Page,
    Project,
    Resource,
    Stage,
    TokenEnvelope,
    User,
    UserPermission,
)

__all__ = [
    "Client",
    "ClientError",
    "EventKind",
    "Experiment",
    "ExperimentStatus",
    "Iteration",
    "IterationRun",
    "IterationStatus",
    "Model",
    "ModelVersion",
    "ModelVersionEvent",
    "Page",
    "Pagination",
    "Project",
    "Resource",
    "Stage",
    "SyncClient",
    "SyncIterationRun",
    "TokenEnvelope",
    "User",
    "UserPermission",
    "connect",
    "connect_sync",
]
