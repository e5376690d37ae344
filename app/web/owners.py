"""Each model's writes go to the one worker process that owns the model.

Registrations and stage changes of one model take turns, and those that
arrive together share one transaction (see `app.store.turns`), but only
within a process. With several workers each batches its own, and two
batches of one model conflict on the model's version counter in the
database: the loser runs again after a pause, and under steady load it
loses again and again. So every model has an owner among the workers (its
id modulo their number); a worker hands a registration, or a change of a
version, of a model it does not own to the owner over a local socket, and
passes the answer back as it came.

What is handed over is the request itself: the owner authenticates it,
checks it and answers it as any request. The model of a version is read
once per worker (a version never moves). An owner that cannot be reached
(starting, stopping) is no reason to fail: this worker answers, since the
database keeps every rule whichever process writes. Once the owner has the
request, though, a lost answer is a 503: the change may have been made,
and only the client can tell whether to try again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict, CIMultiDictProxy

from app import keys
from app.errors import DatabaseUnavailable, NotFound
from app.web.parsing import path_id
from app.web.responses import REQUEST_ID_HEADER

log = logging.getLogger("deardiary.owners")

# The routes whose writes take a model's turn, and where they name it.
REGISTRATION = (hdrs.METH_POST, "/modelversion/model/{id}")
VERSION_CHANGE = (hdrs.METH_PATCH, "/modelversion/{id}")

# Headers that describe one connection or one message's framing: never
# passed on. The request's body is handed over decoded, so its encoding
# goes too; the request id is set anew, once, whatever its spelling.
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        hdrs.CONNECTION,
        hdrs.KEEP_ALIVE,
        hdrs.PROXY_AUTHENTICATE,
        hdrs.PROXY_AUTHORIZATION,
        hdrs.TE,
        hdrs.TRAILER,
        hdrs.TRANSFER_ENCODING,
        hdrs.UPGRADE,
        hdrs.HOST,
        hdrs.CONTENT_LENGTH,
        hdrs.DATE,
        hdrs.SERVER,
        REQUEST_ID_HEADER,
    )
)
_NOT_HANDED_OVER = _HOP_BY_HOP | {hdrs.CONTENT_ENCODING.lower()}

# What a handed-over request has left of its deadline, in seconds: the
# owner gives up (and commits nothing) a margin before the receiving worker
# answers 503 itself, so that a 503 never hides a change made after it.
TIME_LEFT_HEADER = "X-DearDiary-Time-Left"
_MARGIN_S = 0.1


@dataclass(frozen=True)
class Peers:
    """This worker's place among the server's workers, and where each
    listens for the requests the others hand over."""

    index: int
    count: int
    directory: Path

    def socket_path(self, index: int) -> Path:
        """Where worker ``index`` listens for handed-over requests."""
        return self.directory / f"{index}.sock"

    def owner(self, model_id: int) -> int:
        """The worker that writes model ``model_id``."""
        return model_id % self.count


def time_left(request: web.Request) -> float | None:
    """The seconds left to a request another worker handed over; None for
    any other request, whatever its headers say."""
    given = request.headers.get(TIME_LEFT_HEADER)
    if given is None or not from_peer(request):
        return None
    try:
        seconds = float(given)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def from_peer(request: web.Request) -> bool:
    """Whether another worker handed this request over."""
    # Workers hand requests over on a UNIX socket, whose peer address is
    # a path (a str, '' when unnamed); a TCP client's is a (host, port)
    # tuple, and anything else (an abstract name's bytes, None) is no
    # worker's. aiohttp reads it once per connection; asking the
    # transport for its socket's family on every request cost about 2%
    # of a GET by id.
    return isinstance(request.protocol.peername, str)


class Handover:
    """One client session per other worker, for the lifetime of the app."""

    def __init__(self, peers: Peers) -> None:
        self.peers = peers
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    def _session(self, owner: int) -> aiohttp.ClientSession:
        session = self._sessions.get(owner)
        if session is None:
            # A connection per handover: a kept one that the owner closes
            # as it stops would fail a request it never saw, and a write
            # must not be sent twice.
            connector = aiohttp.UnixConnector(
                path=str(self.peers.socket_path(owner)), force_close=True
            )
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
            self._sessions[owner] = session
        return session

    async def close(self) -> None:
        """Close every session."""
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def send(self, request: web.Request, owner: int) -> web.Response | None:
        """The owner's answer to ``request``; None if it could not be
        reached, so that this worker answers instead."""
        body = await request.read()
        headers = _kept(request.headers, _NOT_HANDED_OVER)
        headers[REQUEST_ID_HEADER] = request[keys.REQUEST_ID]
        left = request[keys.DEADLINE] - asyncio.get_running_loop().time()
        headers[TIME_LEFT_HEADER] = f"{max(left - _MARGIN_S, 0.001):.3f}"
        try:
            async with self._session(owner).request(
                request.method,
                f"http://worker{owner}{request.path_qs}",
                data=body,
                headers=headers,
            ) as answer:
                return web.Response(
                    status=answer.status,
                    body=await answer.read(),
                    headers=_kept(answer.headers, _HOP_BY_HOP),
                )
        except aiohttp.ClientConnectorError as exc:
            log.info("worker %d not reachable (%s): answering here", owner, exc)
            return None
        except aiohttp.ClientError as exc:
            raise DatabaseUnavailable(
                f"the worker process writing this model stopped answering "
                f"({type(exc).__name__}); the change may or may not have been "
                "made: check, or retry with an Idempotency-Key"
            ) from exc


async def model_named(request: web.Request) -> int | None:
    """The model whose turn this request's write takes, if any."""
    match = request.match_info
    resource = match.route.resource
    if match.http_exception is not None or resource is None:
        return None
    route = (request.method, resource.canonical)
    if route not in (REGISTRATION, VERSION_CHANGE):
        return None
    try:
        id_ = path_id(request, "record")
    except NotFound:
        return None  # an id that names nothing: answered here, as ever
    if route == REGISTRATION:
        return id_
    return await request.app[keys.SERVICES].modelversions.model_of(id_)


def _kept(headers: CIMultiDictProxy[str], dropped: frozenset[str]) -> CIMultiDict[str]:
    """Every header but the ``dropped`` ones, repeated ones each kept."""
    return CIMultiDict(
        (name, value) for name, value in headers.items() if name.lower() not in dropped
    )


HANDOVER = web.AppKey("handover", Handover)
PEERS = web.AppKey("peers", Peers)


@web.middleware
async def to_owner(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Hand a model's registration or version change to its owner."""
    if from_peer(request):
        return await handler(request)
    model_id = await model_named(request)
    if model_id is None:
        return await handler(request)
    handover = request.app[HANDOVER]
    owner = handover.peers.owner(model_id)
    if owner == handover.peers.index:
        return await handler(request)
    answer = await handover.send(request, owner)
    return answer if answer is not None else await handler(request)


def handing_over(
    peers: Peers,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that holds this worker's sessions to the others."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        app[HANDOVER] = handover = Handover(peers)
        try:
            yield
        finally:
            await handover.close()

    return context
