"""The client's HTTP layer: one pooled session, timeouts, retries, errors.

Every call has a timeout. Reads (GET) are retried with exponential backoff
and jitter when the connection fails or the server answers 503. So are
writes that carry an ``Idempotency-Key``: the server answers a repeat of
such a write with the first answer instead of acting twice, and a repeat
that finds the first still running (409 IDEMPOTENCY_KEY_IN_FLIGHT) waits
as long as its Retry-After says. Any other write is retried only when no
connection could be opened, so nothing was sent; a later failure of it is
reported, never repeated, because the server may already have acted on it.

One exception lies in aiohttp itself: it sends a DELETE once more when the
connection drops (HTTP counts DELETE as idempotent), which saves a delete
sent on a pooled connection the server had just closed. A delete whose
answer was lost may then report 404 NOT_FOUND although it took effect.
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
# The server's answer to a repeat while the first request still runs.
IN_FLIGHT = "IDEMPOTENCY_KEY_IN_FLIGHT"
IDEMPOTENCY_KEY = "Idempotency-Key"


class ClientError(Exception):
    """A call that failed: the registry refused it or could not be reached.

    ``status`` is the HTTP status, or 0 when no answer came; ``code`` is the
    registry's stable error code (``NOT_FOUND``, ``CONFLICT``, ...) or one
    of the client's own (``TIMEOUT``, ``CONNECTION_ERROR``,
    ``UNEXPECTED_RESPONSE``, ``CHECKSUM_MISMATCH``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request: str = "",
        *,
        retry_after: float | None = None,
        etag: str | None = None,
    ) -> None:
        super().__init__(status, code, message, request)
        self.status = status
        self.code = code
        self.message = message
        self.request = request  # "METHOD /path" of the failed call
        self.retry_after = retry_after  # seconds the server asked to wait
        self.etag = etag  # the record's current ETag, on 412

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

    def pause(self, attempt: int, at_least: float | None = None) -> float:
        """Seconds to wait after failed ``attempt`` (1-based): full jitter,
        but no less than the server asked for (up to ``max_backoff``)."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        floor = min(self.max_backoff, at_least or 0.0)
        return max(floor, random.uniform(0, ceiling))


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

    async def get(
        self, path: str, *, params: Mapping[str, int | str] | None = None
    ) -> bytes:
        """The body of a successful GET."""
        return await self.exchange("GET", path, params=params)

    async def get_with_headers(
        self,
        path: str,
        *,
        params: Mapping[str, int | str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Status, headers and body of a successful GET (304 included)."""

        async def attempt() -> tuple[int, Mapping[str, str], bytes]:
            response = await self._open(
                "GET", path, False, params=params, headers=headers
            )
            async with response:
                return response.status, response.headers, await response.read()

        return await self._with_retries("GET", path, attempt, keyed=False)

    def describe(self, method: str, path: str) -> str:
        """``METHOD /path`` of a call, as errors name it."""
        return f"{method} {self._prefix}{path}"

    async def get_json(self, path: str) -> Any:
        """The decoded JSON body of a successful GET."""
        return _decode(await self.get(path), self.describe("GET", path))

    async def send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send a JSON body; the decoded JSON answer."""
        answer = await self.exchange(
            method,
            path,
            json=dict(body),
            idempotency_key=idempotency_key,
            headers=headers,
        )
        return _decode(answer, self.describe(method, path))

    async def send_form(
        self,
        path: str,
        form: Callable[[], aiohttp.FormData],
        *,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """POST a multipart body, streamed; the decoded JSON answer."""
        answer = await self.exchange(
            "POST",
            path,
            form=form,
            streaming=True,
            idempotency_key=idempotency_key,
            headers=headers,
        )
        return _decode(answer, self.describe("POST", path))

    async def exchange(
        self,
        method: str,
        path: str,
        *,
        form: Callable[[], aiohttp.FormData] | None = None,
        streaming: bool = False,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> bytes:
        """One call with retries; the body of its successful answer.

        ``form`` builds a multipart body afresh for each attempt. A write
        with an ``idempotency_key`` sends it with every attempt and is
        retried like a read.
        """
        extra = dict(headers or {})
        if idempotency_key is not None:
            extra[IDEMPOTENCY_KEY] = idempotency_key

        async def attempt() -> bytes:
            if form is not None:
                kwargs["data"] = form()
            response = await self._open(
                method, path, streaming, headers=extra, **kwargs
            )
            async with response:
                return await response.read()

        keyed = idempotency_key is not None
        return await self._with_retries(method, path, attempt, keyed=keyed)

    @asynccontextmanager
    async def stream(self, path: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """A successful GET whose body the caller reads in chunks.

        Opening is retried; reading is not, since the caller may already
        have consumed part of the body.
        """
        response = await self._with_retries(
            "GET", path, lambda: self._open("GET", path, True), keyed=False
        )
        try:
            async with response:
                yield response
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _failure_of(exc, self.describe("GET", path)) from exc

    async def _open(
        self,
        method: str,
        path: str,
        streaming: bool,
        *,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> aiohttp.ClientResponse:
        """Send the request; the response once its status is a success."""
        response = await self._session.request(
            method,
            self.url + path,
            headers={**self._headers(), **(headers or {})},
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
        self,
        method: str,
        path: str,
        attempt: Callable[[], Awaitable[T]],
        *,
        keyed: bool,
    ) -> T:
        tries = 0
        while True:
            tries += 1
            try:
                return await attempt()
            except (aiohttp.ClientError, TimeoutError, ClientError) as exc:
                retry = _retryable(method, exc, keyed=keyed)
                if tries >= self._retry.attempts or not retry:
                    if isinstance(exc, ClientError):
                        raise
                    raise _failure_of(exc, self.describe(method, path)) from exc
                wait = exc.retry_after if isinstance(exc, ClientError) else None
                pause = self._retry.pause(tries, at_least=wait)
                log.debug(
                    "%s %s failed (%s), try %d again in %.2fs",
                    method,
                    path,
                    exc,
                    tries + 1,
                    pause,
                )
            await asyncio.sleep(pause)


def _retryable(method: str, exc: Exception, *, keyed: bool) -> bool:
    """Whether trying ``exc``'s call again cannot do harm; ``keyed`` says a
    write carries an Idempotency-Key, which makes a repeat harmless."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return True  # no connection was opened: nothing was sent
    if method != "GET" and not keyed:
        return False
    if isinstance(exc, ClientError):
        return exc.status == 503 or (keyed and exc.code == IN_FLIGHT)
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
            return ClientError(
                response.status,
                code,
                message,
                request,
                retry_after=_seconds(response.headers.get("Retry-After")),
                etag=response.headers.get("ETag"),
            )
    except (ValueError, TypeError, KeyError):
        pass
    text = raw[:200].decode("utf-8", "replace")
    message = f"not the registry's error envelope: {text}"
    return ClientError(response.status, UNEXPECTED_RESPONSE, message, request)


def _seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds; None if absent or an HTTP date."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _decode(raw: bytes, request: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ClientError(
            NO_RESPONSE, UNEXPECTED_RESPONSE, "the answer is not JSON", request
        ) from exc
