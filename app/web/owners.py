"""Each model's writes go to the one worker process that owns the model.

Registrations and stage changes of one model take turns, and those that
arrive together share one transaction (see `app.store.turns`), but only
within a process. With several workers each batches its own, and two
batches of one model conflict on the model's version counter in the
database: the loser runs again after a pause, and under steady load it
loses again and again. So every model has an owner among the workers (its
id modulo their number); a worker hands a registration or stage change of a
model it does not own to the owner over a local socket, and passes the
answer back as it came.

What is handed over is the request itself: the owner authenticates it,
checks it and answers it as any request. The model of a version is read
once per worker (a version never moves). An owner that cannot be reached
(starting, stopping) is no reason to fail: this worker answers, since the
database keeps every rule whichever process writes. Once the owner has the
request, though, a lost answer is a 503: the change may have been made,
and only the client can tell whether to try again.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from app import keys
from app.errors import DatabaseUnavailable

log = logging.getLogger("deardiary.owners")

# The routes whose writes take a model's turn, and where they name it.
REGISTRATION = (hdrs.METH_POST, "/modelversion/model/{id}")
VERSION_CHANGE = (hdrs.METH_PATCH, "/modelversion/{id}")

# Headers that describe one connection, or a body as it was on the wire
# (the body is handed over decoded): never passed on.
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
        hdrs.CONTENT_ENCODING,
        hdrs.DATE,
        hdrs.SERVER,
    )
)


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


def from_peer(request: web.Request) -> bool:
    """Whether another worker handed this request over."""
    transport = request.transport
    if transport is None:
        return False
    found = transport.get_extra_info("socket")
    return found is not None and found.family == socket.AF_UNIX


class Handover:
    """One connection pool per other worker, for the lifetime of the app."""

    def __init__(self, peers: Peers) -> None:
        self.peers = peers
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    def _session(self, owner: int) -> aiohttp.ClientSession:
        session = self._sessions.get(owner)
        if session is None:
            connector = aiohttp.UnixConnector(path=str(self.peers.socket_path(owner)))
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
            self._sessions[owner] = session
        return session

    async def close(self) -> None:
        """Close every pool."""
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def send(self, request: web.Request, owner: int) -> web.Response | None:
        """The owner's answer to ``request``; None if it could not be
        reached, so that this worker answers instead."""
        body = await request.read()
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in _HOP_BY_HOP
        }
        headers["X-Request-ID"] = request[keys.REQUEST_ID]
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
                    headers={
                        name: value
                        for name, value in answer.headers.items()
                        if name.lower() not in _HOP_BY_HOP
                        and name.lower() != "x-request-id"
                    },
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
    if route == REGISTRATION:
        return int(match["id"])
    if route == VERSION_CHANGE:
        versions = request.app[keys.SERVICES].modelversions
        return await versions.model_of(int(match["id"]))
    return None


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
    """The cleanup context that holds this worker's pools to the others."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        app[HANDOVER] = handover = Handover(peers)
        try:
            yield
        finally:
            await handover.close()

    return context
