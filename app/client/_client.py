"""The async client: every route as a method, over one pooled session.

    async with connect("http://127.0.0.1:9000") as client:
        model = await client.get_model(1)

``connect`` is awaitable too (``client = await connect(...)``); such a
client is closed with ``await client.close()``.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any

import aiohttp

from app.client._http import ClientError, RetryPolicy, Transport
from app.client._records import ExperimentCalls, IterationCalls, ProjectCalls
from app.client._registry import ModelCalls, ModelVersionCalls
from app.client._resources import ResourceCalls
from app.client._users import AuthCalls, PermissionCalls, UserCalls
from app.schemas import DESCRIPTION_MAX, Iteration, IterationStatus

log = logging.getLogger("deardiary.client")

DEFAULT_TIMEOUT = 30.0


class Client(
    AuthCalls,
    ProjectCalls,
    ExperimentCalls,
    IterationCalls,
    ResourceCalls,
    ModelCalls,
    ModelVersionCalls,
    UserCalls,
    PermissionCalls,
):
    """A registry over HTTP; getters answer None on 404, every other
    failure raises `ClientError`."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport
        self._production = {}

    @property
    def url(self) -> str:
        """The registry's base URL."""
        return self._http.url

    async def close(self) -> None:
        """Close the pooled connections."""
        await self._http.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def health(self) -> str:
        """The server's liveness answer (``"ok"``); raises if unreachable."""
        answer = await self._http.get_json("/health")
        return str(answer.get("status", "")) if isinstance(answer, dict) else ""

    def iteration(
        self,
        experiment_id: int,
        notes: str | None = None,
        parent_iteration_id: int | None = None,
    ) -> IterationRun:
        """A training run as a context manager: see `IterationRun`."""
        return IterationRun(self, experiment_id, notes, parent_iteration_id)


class IterationRun:
    """Creates an iteration on entry and records how the block ended.

    A clean exit marks the iteration SUCCEEDED. An exception marks it
    FAILED with the exception's text as ``error_message``, and a
    cancellation or interrupt (``KeyboardInterrupt``, ``CancelledError``)
    marks it KILLED; the exception then propagates unchanged.
    """

    def __init__(
        self,
        client: Client,
        experiment_id: int,
        notes: str | None,
        parent_iteration_id: int | None,
    ) -> None:
        self._client = client
        self._experiment_id = experiment_id
        self._notes = notes
        self._parent = parent_iteration_id
        self._id: int | None = None

    async def __aenter__(self) -> Iteration:
        client = self._client
        self._id = await client.create_iteration(
            self._experiment_id, notes=self._notes, parent_iteration_id=self._parent
        )
        record = await client.get_iteration(self._id)
        if record is None:
            message = f"iteration {self._id} vanished once created"
            raise ClientError(404, "NOT_FOUND", message)
        return record

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._id is not None, "__aexit__ without __aenter__"
        if exc is None:
            await self._client.update_iteration(
                self._id, status=IterationStatus.SUCCEEDED
            )
            return

        status = (
            IterationStatus.FAILED
            if isinstance(exc, Exception)
            else IterationStatus.KILLED
        )
        try:
            await self._client.update_iteration(
                self._id, status=status, error_message=error_text(exc)
            )
        except ClientError as failure:
            # The block's own exception matters more than this one.
            log.warning(
                "could not mark iteration %d %s: %s", self._id, status.name, failure
            )


def error_text(exc: BaseException) -> str:
    """The exception's text as an iteration's error message: never empty,
    within the length limit, free of control characters but line breaks."""
    text = str(exc) or type(exc).__name__
    text = "".join(
        " " if unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" else ch
        for ch in text
    )
    return text[:DESCRIPTION_MAX]


class _Connecting:
    """What `connect` returns: awaitable, or an async context manager."""

    def __init__(self, opener: Callable[[], Awaitable[Client]]) -> None:
        self._opener = opener
        self._client: Client | None = None

    def __await__(self) -> Generator[Any, None, Client]:
        return self._opener().__await__()

    async def __aenter__(self) -> Client:
        self._client = await self._opener()
        return self._client

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._client is not None
        await self._client.close()


def connect(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    attempts: int = 3,
    pool_size: int = 100,
) -> _Connecting:
    """A client of the registry at ``url``.

    Log in with ``username`` and ``password``, or carry a ``token`` from an
    earlier login; with neither, calls carry no token (auth off). Every
    call times out after ``timeout`` seconds (for up- and downloads: of
    silence); a read, or a create or update (each carries an
    Idempotency-Key), is tried at most ``attempts`` times.
    """
    if (username is None) != (password is None):
        raise ValueError("give both username and password, or neither")
    if username is not None and token is not None:
        raise ValueError("give username and password, or a token, not both")
    if timeout <= 0 or attempts < 1 or pool_size < 1:
        raise ValueError("timeout, attempts and pool_size must be positive")

    async def open_client() -> Client:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool_size))
        retry = RetryPolicy(attempts=attempts)
        transport = Transport(url, timeout=timeout, retry=retry, session=session)
        transport.token = token
        client = Client(transport)
        if username is None or password is None:
            return client
        try:
            await client.login(username, password)
        except BaseException:
            await client.close()
            raise
        return client

    return _Connecting(open_client)
