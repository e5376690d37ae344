"""The client's HTTP layer: one pooled session, timeouts, retries, errors.

Every call has a timeout. Reads (GET) are retried with exponential backoff
and jitter when the connection fails or the server answers 503. A write is
retried only when no connection could be opened, so nothing was sent; any
later failure of a write is reported, never repeated, because the server
may already have acted on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import yarl

log = logging.getLogger("deardiary.client")

T = TypeVar("T")

# Codes for failures the server did not name; its own codes are in SPEC 3.
NO_RESPONSE = 0
TIMEOUT = "TIMEOUT"
CONNECTION_ERROR = "CONNECTION_ERROR"
UNEXPECTED_RESPONSE = "UNEXPECTED_RESPONSE"
CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"


class ClientError(Exception):
    """A call that failed: the registry refused it or could not be reached.

    ``status`` is the HTTP status, or 0 when no answer came; ``code`` is the
    registry's stable error code (``NOT_FOUND``, ``CONFLICT``, ...) or one
    of the client's own (``TIMEOUT``, ``CONNECTION_ERROR``,
    ``UNEXPECTED_RESPONSE``, ``CHECKSUM_MISMATCH``).
    """

    def __init__(self, status: int, code: str, message: str, request: str = "") -> None:
        super().__init__(status, code, message, request)
        self.status = status
        self.code = code
        self.message = message
        self.request = request  # "METHOD /path" of the failed call

    def __str__(self) -> str:
        outcome = f"{self.code}: {self.message}"
        if self.status != NO_RESPONSE:
            outcome = f"{self.status} {outcome}"
        if not self.request:
            return outcome
        verb = "answered" if self.status != NO_RESPONSE else "failed:"
        return f"{self.request} {verb} {outcome}"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a call is tried."""

    attempts: int = 3
    backoff: float = 0.2
    max_backoff: float = 5.0

    def pause(self, attempt: int) -> float:
        """Seconds to wait after failed ``attempt`` (1-based): full jitter."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)


class Transport:
    """Requests to one registry over one pooled aiohttp session."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        retry: RetryPolicy,
        session: aiohttp.ClientSession,
    ) -> None:
        self.url = url.rstrip("/")
        self._prefix = yarl.URL(self.url).path.rstrip("/")
        self.timeout = timeout
        self.token: str | None = None
        self._retry = retry
        self._session = session

    @property
    def closed(self) -> bool:
        """True once the session is closed."""
        return self._session.closed

    async def close(self) -> None:
        """Close the session and its pooled connections."""
        await self._session.close()

    async def get(self, path: str, *, params: Mapping[str, int] | None = None) -> bytes:
        """The body of a successful GET."""
        return await self.exchange("GET", path, params=params)

    def describe(self, method: str, path: str) -> str:
        """``METHOD /path`` of a call, as errors name it."""
        return f"{method} {self._prefix}{path}"

    async def get_json(self, path: str) -> Any:
        """The decoded JSON body of a successful GET."""
        return _decode(await self.get(path), self.describe("GET", path))

    async def send(self, method: str, path: str, body: Mapping[str, Any]) -> Any:
        """Send a JSON body; the decoded JSON answer."""
        answer = await self.exchange(method, path, json=dict(body))
        return _decode(answer, self.describe(method, path))

    async def send_form(self, path: str, form: Callable[[], aiohttp.FormData]) -> Any:
        """POST a multipart body, streamed; the decoded JSON answer."""
        answer = await self.exchange("POST", path, form=form, streaming=True)
        return _decode(answer, self.describe("POST", path))

    async def exchange(
        self,
        method: str,
        path: str,
        *,
        form: Callable[[], aiohttp.FormData] | None = None,
        streaming: bool = False,
        **kwargs: Any,
    ) -> bytes:
        """One call with retries; the body of its successful answer.

        ``form`` builds a multipart body afresh for each attempt.
        """

        async def attempt() -> bytes:
            if form is not None:
                kwargs["data"] = form()
            response = await self._open(method, path, streaming, **kwargs)
            async with response:
                return await response.read()

        return await self._with_retries(method, path, attempt)

    @asynccontextmanager
    async def stream(self, path: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """A successful GET whose body the caller reads in chunks.

        Opening is retried; reading is not, since the caller may already
        have consumed part of the body.
        """
        response = await self._with_retries(
            "GET", path, lambda: self._open("GET", path, True)
        )
        try:
            async with response:
                yield response
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _failure_of(exc, self.describe("GET", path)) from exc

    async def _open(
        self, method: str, path: str, streaming: bool, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        """Send the request; the response once its status is a success."""
        response = await self._session.request(
            method,
            self.url + path,
            headers=self._headers(),
            timeout=self._timeout(streaming),
            **kwargs,
        )
        if response.status < 400:
            return response
        async with response:
            raise await _refusal(response, self.describe(method, path))

    def _headers(self) -> dict[str, str]:
        if self.token is None:
            return {}
        return {"Authorization": f"Bearer {self.token}"}

    def _timeout(self, streaming: bool) -> aiohttp.ClientTimeout:
        if streaming:
            # Large bodies may take long in all; only a stall is an error.
            return aiohttp.ClientTimeout(
                total=None, sock_connect=self.timeout, sock_read=self.timeout
            )
        return aiohttp.ClientTimeout(total=self.timeout)

    async def _with_retries(
        self, method: str, path: str, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except (aiohttp.ClientError, TimeoutError, ClientError) as exc:
                if tries >= self._retry.attempts or not _retryable(method, exc):
                    if isinstance(exc, ClientError):
                        raise
                    raise _failure_of(exc, self.describe(method, path)) from exc
                pause = self._retry.pause(tries)
                log.debug(
                    "%s %s failed (%s), try %d again in %.2fs",
                    method,
                    path,
                    exc,
                    tries + 1,
                    pause,
                )
            await asyncio.sleep(pause)


def _retryable(method: str, exc: Exception) -> bool:
    """Whether trying ``exc``'s call again cannot do harm."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return True  # no connection was opened: nothing was sent
    if method != "GET":
        return False
    if isinstance(exc, ClientError):
        return exc.status == 503
    return isinstance(exc, aiohttp.ClientConnectionError) and not isinstance(
        exc, TimeoutError
    )


def _failure_of(exc: Exception, request: str) -> ClientError:
    """A transport failure as a ClientError; ClientErrors pass unchanged."""
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, TimeoutError):
        return ClientError(NO_RESPONSE, TIMEOUT, "no answer in time", request)
    detail = str(exc) or type(exc).__name__
    return ClientError(NO_RESPONSE, CONNECTION_ERROR, detail, request)


async def _refusal(response: aiohttp.ClientResponse, request: str) -> ClientError:
    """The error envelope of a failed answer as a ClientError."""
    raw = await response.read()
    try:
        envelope = json.loads(raw)
        code, message = envelope["code"], envelope["message"]
        if isinstance(code, str) and isinstance(message, str):
            return ClientError(response.status, code, message, request)
    except (ValueError, TypeError, KeyError):
        pass
    text = raw[:200].decode("utf-8", "replace")
    message = f"not the registry's error envelope: {text}"
    return ClientError(response.status, UNEXPECTED_RESPONSE, message, request)


def _decode(raw: bytes, request: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ClientError(
            NO_RESPONSE, UNEXPECTED_RESPONSE, "the answer is not JSON", request
        ) from exc
