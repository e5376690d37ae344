"""The round-trip budget of the hot routes, counted by the driver itself.

Every command the app sends to MongoDB is seen by a pymongo command
listener on the app's own client, so the counts are exact: a GET by id is
one command (two with a token, whose user and flags are read first), a page
two commands in flight together, a registration five at most, a promotion
four at most. Handshakes and session bookkeeping are not requests of the
app and are left out. Transactions count: their commit is a round trip.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pymongo import monitoring

from app.embedded import EmbeddedStore
from app.mongo import Client
from app.server import create_app
from app.settings import Settings
from tests.helpers import (
    call,
    lineage,
    make_model,
    patch_json,
    post_json,
    register,
    upload,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PRODUCTION = 3
# Commands of the driver's own housekeeping, not of a request.
HOUSEKEEPING = frozenset(
    {
        "hello",
        "ismaster",
        "isMaster",
        "saslStart",
        "saslContinue",
        "endSessions",
        "killCursors",
    }
)
# How long the first command of a page waits for the second to start; it
# only matters when they do not run together, and then the test fails.
HOLD_TIMEOUT_S = 5.0
JWT_SECRET = "round-trip-tests-only-secret-of-40-bytes!"
PASSWORD = "a-long-password-1"

_databases = itertools.count(1)


class CommandLog(monitoring.CommandListener):
    """The commands a client sends while recording, and how many at once.

    The driver calls it on its own threads. With ``hold`` set, a command
    that starts waits (up to HOLD_TIMEOUT_S) until ``hold`` commands are in
    flight, so commands sent together are seen together, whatever the
    thread scheduling.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._recording = False
        self._in_flight: set[tuple[Any, int]] = set()
        self.hold = 0
        self.names: list[str] = []
        self.widest = 0

    @contextlib.contextmanager
    def recording(self, *, hold: int = 0) -> Iterator[CommandLog]:
        """Record the commands sent inside the block."""
        with self._lock:
            self.names, self.widest, self.hold = [], 0, hold
            self._recording = True
        try:
            yield self
        finally:
            with self._lock:
                self._recording = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Count a command of the app, and hold it if asked to."""
        if event.command_name in HOUSEKEEPING:
            return
        with self._lock:
            if not self._recording:
                return
            self.names.append(event.command_name)
            self._in_flight.add(_key(event))
            self.widest = max(self.widest, len(self._in_flight))
            self._lock.notify_all()
            self._lock.wait_for(
                lambda: len(self._in_flight) >= self.hold, HOLD_TIMEOUT_S
            )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """A counted command is no longer in flight."""
        self._done(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """A counted command is no longer in flight."""
        self._done(event)

    def _done(
        self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent
    ) -> None:
        with self._lock:
            self._in_flight.discard(_key(event))


def _key(event: Any) -> tuple[Any, int]:
    return (event.connection_id, event.request_id)


@contextlib.asynccontextmanager
async def _served(
    store: EmbeddedStore, **settings: Any
) -> AsyncIterator[tuple[TestClient, CommandLog]]:
    """The app on a fresh database, its client watched by a CommandLog."""
    commands = CommandLog()
    db_name = f"round_trips_{next(_databases)}"
    # The client open_client builds, plus the listener (it takes none).
    mongo = Client(
        store.uri,
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=5000,
        event_listeners=[commands],
    )
    app = create_app(
        Settings(mongo_uri=store.uri, db_name=db_name, **settings), client=mongo
    )
    try:
        async with TestClient(TestServer(app)) as api:
            yield api, commands
    finally:
        await mongo.drop_database(db_name)
        mongo.close()


@pytest.fixture
async def watched(
    secantus: EmbeddedStore,
) -> AsyncIterator[tuple[TestClient, CommandLog]]:
    """The app with auth off, on SecantusDB with transactions."""
    async with _served(secantus) as served:
        yield served


@pytest.fixture
async def watched_auth(
    secantus: EmbeddedStore,
) -> AsyncIterator[tuple[TestClient, CommandLog]]:
    """The app with auth on, on SecantusDB with transactions."""
    async with _served(
        secantus,
        enable_auth=True,
        jwt_secret=JWT_SECRET,
        admin_username="root",
        admin_password=PASSWORD,
        bcrypt_rounds=4,
    ) as served:
        yield served


async def _versions(api: TestClient, count: int) -> dict[str, Any]:
    """A model with ``count`` versions registered with an artifact."""
    ids = await lineage(api)
    resource_id = await upload(api, ids["experiment_id"], b"weights")
    versions = [
        await register(
            api, ids["model_id"], ids["iteration_id"], resource_id=resource_id
        )
        for _ in range(count)
    ]
    return {**ids, "resource_id": resource_id, "versions": versions}


async def test_get_by_id_is_one_command(watched: Any) -> None:
    api, commands = watched
    version_id = (await _versions(api, 1))["versions"][0]

    with commands.recording():
        await call(api, "GET", f"/modelversion/{version_id}", 200)

    assert commands.names == ["find"]


async def test_get_by_id_with_a_token_adds_one_command(watched_auth: Any) -> None:
    api, commands = watched_auth
    admin = await _log_in(api, "root")
    ids = await _versions(admin, 1)
    version_id = ids["versions"][0]
    reader = await _reader(admin, api, ids["project_id"])

    with commands.recording():
        await call(reader, "GET", f"/modelversion/{version_id}", 200)

    # The user with their flags in one query, then the record itself.
    assert len(commands.names) == 2, " ".join(commands.names)
    assert commands.names[-1] == "find"


async def test_a_page_is_two_commands_in_flight_together(watched: Any) -> None:
    api, commands = watched
    ids = await lineage(api)
    for number in range(3):
        await make_model(api, ids["project_id"], f"more-{number}")

    with commands.recording(hold=2):
        page = await call(api, "GET", f"/model/project/{ids['project_id']}", 200)

    assert page["total"] == 4
    assert len(commands.names) <= 2, " ".join(commands.names)
    assert commands.widest == len(commands.names), "sent one after the other"


async def test_an_empty_page_is_two_commands_in_flight_together(
    watched: Any,
) -> None:
    api, commands = watched
    ids = await lineage(api)

    with commands.recording(hold=2):
        page = await call(api, "GET", f"/modelversion/model/{ids['model_id']}", 200)

    assert (page["data"], page["total"]) == ([], 0)
    assert len(commands.names) <= 2, " ".join(commands.names)
    assert commands.widest == len(commands.names), "sent one after the other"


async def test_a_page_under_a_missing_parent_is_404_in_two_commands(
    watched: Any,
) -> None:
    api, commands = watched
    await lineage(api)

    with commands.recording(hold=2):
        await call(api, "GET", "/model/project/999", 404)

    assert len(commands.names) <= 2, " ".join(commands.names)


async def test_a_registration_is_at_most_five_commands(watched: Any) -> None:
    api, commands = watched
    ids = await _versions(api, 1)
    body = {"iteration_id": ids["iteration_id"], "resource_id": ids["resource_id"]}

    with commands.recording():
        await post_json(api, f"/modelversion/model/{ids['model_id']}", body)

    assert commands.names, "nothing was counted"
    assert len(commands.names) <= 5, " ".join(commands.names)


async def test_a_promotion_is_at_most_four_commands(watched: Any) -> None:
    api, commands = watched
    first, second = (await _versions(api, 2))["versions"]
    await patch_json(api, f"/modelversion/{first}", {"stage_id": PRODUCTION})

    with commands.recording():
        await patch_json(api, f"/modelversion/{second}", {"stage_id": PRODUCTION})

    assert commands.names, "nothing was counted"
    assert len(commands.names) <= 4, " ".join(commands.names)


# Auth on ---------------------------------------------------------------------


async def test_a_registration_with_a_token_adds_one_command(
    watched_auth: Any,
) -> None:
    api, commands = watched_auth
    admin = await _log_in(api, "root")
    ids = await _versions(admin, 1)
    writer = await _user(admin, api, ids["project_id"], "writer", "create")
    body = {"iteration_id": ids["iteration_id"], "resource_id": ids["resource_id"]}

    with commands.recording():
        await post_json(writer, f"/modelversion/model/{ids['model_id']}", body)

    # The user with their flags; the model's project comes with the lineage.
    assert len(commands.names) <= 5 + 1, " ".join(commands.names)


async def test_a_promotion_with_a_token_adds_one_command(watched_auth: Any) -> None:
    api, commands = watched_auth
    admin = await _log_in(api, "root")
    ids = await _versions(admin, 2)
    first, second = ids["versions"]
    await patch_json(admin, f"/modelversion/{first}", {"stage_id": PRODUCTION})
    writer = await _user(admin, api, ids["project_id"], "writer", "update")

    with commands.recording():
        await patch_json(writer, f"/modelversion/{second}", {"stage_id": PRODUCTION})

    assert len(commands.names) <= 4 + 1, " ".join(commands.names)


class _Bearer:
    """A TestClient stand-in that sends one user's token with every request."""

    def __init__(self, api: TestClient, token: str) -> None:
        self._api = api
        self._headers = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._api.request(method, path, headers=self._headers, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)


async def _log_in(api: TestClient, username: str) -> Any:
    body = await post_json(
        api, "/auth", {"username": username, "password": PASSWORD}, status=200
    )
    return _Bearer(api, body["access_token"])


async def _reader(admin: Any, api: TestClient, project_id: int) -> Any:
    """A user who may read the project, logged in."""
    return await _user(admin, api, project_id, "reader")


async def _user(
    admin: Any, api: TestClient, project_id: int, username: str, *flags: str
) -> Any:
    """A user who may read the project and do ``flags`` in it, logged in."""
    created = await post_json(
        admin, "/user", {"username": username, "password": PASSWORD}
    )
    granted = {"read", *flags}
    permissions = {
        f"{flag}_permission": flag in granted
        for flag in ("create", "read", "update", "delete")
    }
    await post_json(
        admin,
        f"/userpermission/user/{created['user_id']}/project/{project_id}",
        permissions,
    )
    return await _log_in(api, username)
