"""Idempotency keys: the stored answers that make a retried write safe.

A key belongs to the user who sent it (``_id`` is ``"<user id>:<key>"``)
and moves through two states:

- ``in_flight``: claimed by a request that is still running. The claim is
  written on its own, before the change, so that every other request sees
  it at once; it carries a random token, so that only its own request
  completes or releases it, and a short lease, so that a claim whose server
  died with the request is taken over once the lease ends.
- ``done``: the answer (status, the headers that matter, body), written in
  the transaction of the change itself; kept for the configured time.

A TTL index removes keys whose ``expires_at`` has passed; since the TTL
monitor runs only once a minute, a key found expired is treated as absent.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from app.errors import IdempotencyKeyInFlight, IdempotencyKeyReused
from app.schemas import now
from app.store.database import Document, Session, Store
from app.store.errors import DuplicateKey

log = logging.getLogger("deardiary.services.idempotency")

KEYS = "idempotency_keys"
# How long a claim holds before another request may take it over; longer
# than any request should run (uploads of large artifacts included).
LEASE = timedelta(minutes=10)
# What a request that finds the key in flight is told to wait, in seconds.
RETRY_AFTER_SECONDS = 1
# Claiming races with expiry and takeover at most this often per request.
CLAIM_ATTEMPTS = 3

IN_FLIGHT = "in_flight"
DONE = "done"


@dataclass
class Claim:
    """A key this request holds while it runs."""

    id: str
    token: str
    completed: bool = field(default=False)


@dataclass(frozen=True)
class Answer:
    """A stored response: status, the headers that matter, and body."""

    status: int
    headers: dict[str, str]
    body: str


class IdempotencyLedger:
    """Claims, completes, releases and replays idempotency keys."""

    def __init__(self, store: Store, *, ttl_seconds: int) -> None:
        self.store = store
        self.ttl = timedelta(seconds=ttl_seconds)

    async def claim(self, user_id: int, key: str, fingerprint: str) -> Claim | Answer:
        """Claim ``key`` for a request, or the answer it already got.

        Raises 422 IDEMPOTENCY_KEY_REUSED when the key answered another
        request, and 409 IDEMPOTENCY_KEY_IN_FLIGHT while its first request
        runs.
        """
        key_id = f"{user_id}:{key}"
        for _ in range(CLAIM_ATTEMPTS):
            claim = await self._insert(key_id, user_id, fingerprint)
            if claim is not None:
                return claim
            found = await self.store.find_one(KEYS, {"_id": key_id})
            if found is None:
                continue  # released or expired meanwhile: claim it afresh
            if _aware(found["expires_at"]) <= now():
                claim = await self._take_over(found, fingerprint)
                if claim is not None:
                    return claim
                continue
            return _verdict(found, fingerprint)
        raise _in_flight()

    async def complete(
        self, claim: Claim, answer: Answer, *, session: Session = None
    ) -> bool:
        """Store the answer under the claim; False if the claim was lost."""
        stored = await self.store.update(
            KEYS,
            {"_id": claim.id, "token": claim.token},
            {
                "$set": {
                    "state": DONE,
                    "status": answer.status,
                    "headers": answer.headers,
                    "body": answer.body,
                    "expires_at": now() + self.ttl,
                }
            },
            session=session,
        )
        claim.completed = True
        return stored

    async def release(self, claim: Claim) -> None:
        """Forget a claim whose request failed, unless it completed."""
        await self.store.delete(
            KEYS, {"_id": claim.id, "token": claim.token, "state": IN_FLIGHT}
        )

    async def _insert(
        self, key_id: str, user_id: int, fingerprint: str
    ) -> Claim | None:
        doc = _claim_doc(key_id, user_id, fingerprint)
        try:
            await self.store.insert(KEYS, doc)
        except DuplicateKey:
            return None
        return Claim(key_id, doc["token"])

    async def _take_over(self, found: Document, fingerprint: str) -> Claim | None:
        """Claim an expired key, unless another request took it first."""
        doc = _claim_doc(found["_id"], found["user_id"], fingerprint)
        del doc["_id"]
        query = {"_id": found["_id"], "token": found["token"]}
        if not await self.store.update(KEYS, query, {"$set": doc}):
            return None
        log.info("idempotency key %s expired and was claimed again", found["_id"])
        return Claim(found["_id"], doc["token"])


def _claim_doc(key_id: str, user_id: int, fingerprint: str) -> Document:
    moment = now()
    return {
        "_id": key_id,
        "user_id": user_id,
        "fingerprint": fingerprint,
        "state": IN_FLIGHT,
        "token": secrets.token_hex(16),
        "created_at": moment,
        "expires_at": moment + LEASE,
    }


def _verdict(found: Document, fingerprint: str) -> Answer:
    """The stored answer of a live key, or why there is none to give."""
    if found["fingerprint"] != fingerprint:
        raise IdempotencyKeyReused(
            "Idempotency-Key: this key was used for another request (method, "
            "path or body differ); send a new key with a new request"
        )
    if found["state"] != DONE:
        raise _in_flight()
    return Answer(
        status=int(found["status"]),
        headers=dict(found.get("headers") or {}),
        body=str(found["body"]),
    )


def _in_flight() -> IdempotencyKeyInFlight:
    return IdempotencyKeyInFlight(
        "Idempotency-Key: the first request with this key is still running; "
        "retry later",
        retry_after=RETRY_AFTER_SECONDS,
    )


def _aware(moment: Any) -> datetime:
    """A stored time as an aware UTC datetime, whatever the client gives."""
    assert isinstance(moment, datetime)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
