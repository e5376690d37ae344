"""Safe retries over HTTP: the ``Idempotency-Key`` header.

Every POST that creates and every PATCH accepts the header. The first
request with a key claims it, and its answer is stored under the key in
the transaction of its change (through the store's commit hook), so the
change and the stored answer exist together or not at all. A repeat with
the same key

- and the same method, path and body gets the stored answer again, with
  ``Idempotent-Replayed: true``, and changes nothing;
- and another method, path or body is 422 IDEMPOTENCY_KEY_REUSED. Bodies
  are compared as validated. A password enters the comparison only as an
  HMAC keyed with the token secret: a plain fast hash kept beside the key
  would let whoever reads the database test guesses at it far faster than
  its bcrypt hash allows. With auth off there is no secret, and passwords
  are left out of the comparison. An upload's bytes cannot be
  read before the key is claimed (they stream into storage as they come),
  so a repeat's file is read and compared with the stored one's sha256;
- while the first request still runs is 409 IDEMPOTENCY_KEY_IN_FLIGHT with
  a Retry-After header.

A request that fails, with a 4xx or otherwise, releases its key. Keys are
scoped to the acting user (with authentication off, the admin) and expire
after ``DEARDIARY_IDEMPOTENCY_TTL_SECONDS``.

Without transactions (a standalone server) the answer is stored right
after the change: a crash between the two leaves the key claimed until
its lease ends, and a retry after that runs the change again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from app import keys
from app.errors import Conflict, IdempotencyKeyReused, RegistryError
from app.services.idempotency import Answer, Claim, IdempotencyLedger
from app.settings import Settings
from app.store.database import Session, on_commit
from app.web.parsing import idempotency_key
from app.web.responses import JSON

log = logging.getLogger("deardiary.http")

R = TypeVar("R")

# The headers of an answer worth replaying; the rest describe the moment.
KEPT_HEADERS = ("Location", "ETag")
REPLAYED = "Idempotent-Replayed"
SECRET_FIELDS = frozenset({"password"})


async def once(
    request: web.Request,
    payload: BaseModel,
    change: Callable[[], Awaitable[R]],
    answer: Callable[[R], web.Response],
    *,
    same_rest: Callable[[Answer], Awaitable[bool]] | None = None,
) -> web.Response:
    """Run ``change`` and answer ``answer(result)``, at most once per key.

    ``payload`` is the request's validated body (for an upload, its text
    parts), which with the method and path tells two requests apart.
    ``same_rest`` tells, for a repeat, whether the part of the request that
    ``payload`` lacks (an upload's bytes) is the first request's too.
    """
    key = idempotency_key(request)
    if key is None:
        return answer(await change())

    body = _comparable(payload, request.app[keys.SETTINGS])
    ledger = _ledger(request)
    actor = request[keys.ACTOR]
    claimed = await ledger.claim(actor.user_id, key, _digest(request, body))
    if isinstance(claimed, Answer):
        if same_rest is not None and not await same_rest(claimed):
            raise IdempotencyKeyReused(
                "Idempotency-Key: this key was used for an upload of other "
                "bytes; send a new key with a new request"
            )
        return _replay(claimed)

    result = await _run(ledger, claimed, change, answer)
    response = answer(result)
    if not claimed.completed:
        # The change ran without a transaction of its own.
        await ledger.complete(claimed, _stored(response))
    return response


async def _run(
    ledger: IdempotencyLedger,
    claim: Claim,
    change: Callable[[], Awaitable[R]],
    answer: Callable[[R], web.Response],
) -> R:
    """The change's result, its answer stored under ``claim`` as it commits."""

    async def keep(result: Any, session: Session) -> None:
        stored = await ledger.complete(claim, _stored(answer(result)), session=session)
        if not stored and session is not None:
            # Abort the change rather than commit it without its answer.
            raise Conflict(
                "Idempotency-Key: the request outlived its claim on the key, "
                "which another request took over; nothing was changed"
            )

    try:
        with on_commit(keep):
            return await change()
    except BaseException:
        await _release(ledger, claim)
        raise


async def _release(ledger: IdempotencyLedger, claim: Claim) -> None:
    try:
        await ledger.release(claim)
    except RegistryError as exc:
        # The claim's lease ends on its own; the original error matters more.
        log.warning("idempotency key %s not released: %s", claim.id, exc)


def _ledger(request: web.Request) -> IdempotencyLedger:
    store = request.app[keys.SERVICES].store
    ttl = request.app[keys.SETTINGS].idempotency_ttl_seconds
    return IdempotencyLedger(store, ttl_seconds=ttl)


def _comparable(payload: BaseModel, settings: Settings) -> bytes:
    """The body as compared between two requests; secrets only keyed."""
    body = payload.model_dump_json(exclude=set(SECRET_FIELDS)).encode()
    secrets = payload.model_dump(include=set(SECRET_FIELDS))
    if not secrets or not settings.enable_auth or settings.jwt_secret is None:
        return body
    key = hmac.new(settings.jwt_secret.encode(), b"idempotency", "sha256").digest()
    mac = hmac.new(key, json.dumps(secrets, sort_keys=True).encode(), "sha256")
    return body + b"\0" + mac.hexdigest().encode()


def _digest(request: web.Request, body: bytes) -> str:
    """What makes two requests the same: method, path and body."""
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _stored(response: web.Response) -> Answer:
    headers = {
        name: response.headers[name]
        for name in KEPT_HEADERS
        if name in response.headers
    }
    return Answer(status=response.status, headers=headers, body=response.text or "")


def _replay(answer: Answer) -> web.Response:
    response = web.Response(status=answer.status, text=answer.body, content_type=JSON)
    response.headers.update(answer.headers)
    response.headers[REPLAYED] = "true"
    return response
