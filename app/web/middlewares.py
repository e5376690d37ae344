"""Middlewares: request ids and access lines, the error envelope, the
request deadline and the acting user."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import secrets
import time

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from pymongo.errors import ConnectionFailure, PyMongoError

from app import keys
from app.auth import bearer_token
from app.errors import (
    DatabaseUnavailable,
    InvalidJSON,
    InvalidPayload,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RegistryError,
)
from app.logs import REQUEST_ID
from app.metrics import observe_request
from app.web import resources, responses
from app.web.deadlines import Deadline
from app.web.owners import from_peer, time_left
from app.web.responses import REQUEST_ID_HEADER
from app.web.routes import PUBLIC

log = logging.getLogger("deardiary.http")
access_log = logging.getLogger("deardiary.access")

# A client's id is kept when it is a plain token of sane length; anything
# else (long, spaced, control characters) is replaced, not logged.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Their bodies move at the client's pace, for as long as the bytes take;
# their database steps are bounded one by one instead.
_STREAMING = frozenset({resources.upload, resources.download})
UNMATCHED = "unmatched"


class InFlight:
    """The requests being handled, so that a shutdown can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self.stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        """A request starts."""
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        """A request has been answered."""
        self.count -= 1
        if not self.count:
            self._idle.set()

    async def drained(self, grace_s: float) -> bool:
        """Wait up to ``grace_s`` seconds for every request to finish.

        From now on answers close their connection; False if requests
        were still running at the end.
        """
        self.stopping = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            return False
        return True


@web.middleware
async def in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the request while it runs; close its connection when stopping."""
    tracker = request.app[keys.IN_FLIGHT]
    tracker.enter()
    try:
        response = await handler(request)
        if tracker.stopping:
            response.force_close()
        return response
    finally:
        tracker.leave()


class _FreshIds:
    """Request ids that look like a uuid4's 32 hex digits: a random 128-bit
    number drawn when the process starts, counted up by one per request.
    Two processes' runs of ids would meet only if their random starts fell
    within a few billion of each other. A uuid4 per request would cost a
    call into the kernel for its random bytes each time."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        """A new start: this process's ids must not repeat another's."""
        self._count = itertools.count(secrets.randbits(128))

    def next(self) -> str:
        """The next id."""
        return f"{next(self._count) & _ID_MASK:032x}"


_ID_MASK = 2**128 - 1
_fresh_ids = _FreshIds()


def request_id(request: web.Request) -> str:
    """The client's X-Request-ID when it is sane, else a fresh one."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given is not None and _CLIENT_REQUEST_ID.fullmatch(given):
        return given
    return _fresh_ids.next()


def route_pattern(request: web.Request) -> str:
    """The matched route's pattern (``/model/{id}``), never the raw path."""
    match = request.match_info
    resource = match.route.resource
    if match.http_exception is not None or resource is None:
        return UNMATCHED
    return resource.canonical


@web.middleware
async def observed(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request its id, then count, time and log it in one line.

    The line names the route pattern, not the path, and never a header,
    a query string or a body.
    """
    request[keys.REQUEST_ID] = request_id(request)
    context = REQUEST_ID.set(request[keys.REQUEST_ID])
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away first
        raise
    finally:
        _access_line(request, status, time.perf_counter() - started)
        REQUEST_ID.reset(context)


# What Logger.info names as the line's source when no caller is looked up
# (app.logs turns the look-up off).
_UNKNOWN_SOURCE = ("(unknown file)", 0, "(unknown function)")


def _access_line(request: web.Request, status: int, seconds: float) -> None:
    route = route_pattern(request)
    if not from_peer(request):
        # A request another worker handed over is counted there, once.
        observe_request(request.method, route, status, seconds)
    if not access_log.isEnabledFor(logging.INFO):
        return
    # Every request writes this line, so it is made here as Logger.info
    # would make it, minus what costs a quarter of the line there: the
    # message's arguments formatted apart (the line is laid out once; its
    # parts are fields of their own) and each ``extra`` field checked
    # against the record's attributes, which these never clash with. The
    # logger then handles it like any other record.
    latency_ms = round(seconds * 1000, 1)
    request_id = request[keys.REQUEST_ID]
    file, line, function = _UNKNOWN_SOURCE
    record = access_log.makeRecord(
        access_log.name,
        logging.INFO,
        file,
        line,
        f"{request.method} {route} {status} {latency_ms:.1f}ms {request_id}",
        (),
        None,
        function,
    )
    fields = vars(record)
    fields["method"] = request.method
    fields["route"] = route
    fields["status"] = status
    fields["latency_ms"] = latency_ms
    fields["request_id"] = request_id
    access_log.handle(record)


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Send the request's id back on every answer, errors included."""
    found = request.get(keys.REQUEST_ID)
    if found is not None:
        response.headers[REQUEST_ID_HEADER] = found


def _from_http(request: web.Request, exc: web.HTTPException) -> RegistryError:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(
            f"{request.method} is not allowed on {request.path}",
            frozenset(exc.allowed_methods),
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("request body is larger than the configured limit")
    if isinstance(exc, web.HTTPNotFound):
        return NotFound(f"no route for {request.method} {request.path}")
    return InvalidJSON(exc.reason)


def _unreadable(request: web.Request) -> RegistryError:
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    how = f"as {encoding} data" if encoding else "in its transfer encoding"
    message = f"the request body could not be decoded {how}"
    if request.content_type.startswith("multipart/"):
        return InvalidPayload(message)
    return InvalidJSON(message)


@web.middleware
async def error_envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as ``{"code", "message"}`` with its status."""
    try:
        return await handler(request)
    except RegistryError as exc:
        return responses.error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return responses.error(_from_http(request, exc))
    except web.RequestPayloadError:
        # A body aiohttp could not decode: bad compressed data, a broken
        # chunked encoding. The client's fault, like any other bad body.
        return responses.error(_unreadable(request))
    except ConnectionFailure:
        return responses.error(DatabaseUnavailable("the database is unreachable"))
    except (Exception, PyMongoError):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return responses.error(RegistryError("internal error"))


@web.middleware
async def deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer 503 once a request has waited longer than its deadline.

    Every database call is bounded on its own, but a transaction may be
    retried by the driver for up to two minutes; the deadline
    (DEARDIARY_REQUEST_TIMEOUT_SECONDS) bounds the whole request. Uploads
    and downloads are exempt: their bytes take as long as they take. A
    request another worker handed over has what that worker had left.
    """
    if request.match_info.handler in _STREAMING:
        return await handler(request)
    seconds = request.app[keys.SETTINGS].request_timeout_seconds
    handed_over = time_left(request)
    if handed_over is not None:
        seconds = min(seconds, handed_over)
    when = request[keys.DEADLINE] = asyncio.get_running_loop().time() + seconds
    bound = Deadline(when)
    try:
        with bound:
            return await handler(request)
    except TimeoutError as exc:
        if not bound.expired:
            raise
        raise DatabaseUnavailable("the database did not answer in time") from exc


@web.middleware
async def acting_user(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve who the request acts for.

    With authentication off that is the seeded admin. With it on, the
    bearer token names the user, loaded with their permission flags in one
    query; public routes and paths the router does not know need no token.
    """
    if not request.app[keys.SETTINGS].enable_auth:
        request[keys.ACTOR] = request.app[keys.ADMIN]
    elif request.match_info.http_exception is None and not _public(request):
        token = bearer_token(request.headers.get(hdrs.AUTHORIZATION))
        services = request.app[keys.SERVICES]
        request[keys.ACTOR] = await services.auth.actor_for(token)
    return await handler(request)


def _public(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    # aiohttp answers HEAD with the GET handler: the same rule applies.
    method = hdrs.METH_GET if request.method == hdrs.METH_HEAD else request.method
    return resource is not None and (method, resource.canonical) in PUBLIC
