"""Passwords and tokens: bcrypt hashes and HS256 JSON Web Tokens.

Hashing and checking run in the default executor: bcrypt is built to be
slow, and the event loop must keep serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import bcrypt
import jwt

from app.errors import TokenExpired, TokenInvalid, TokenMissing
from app.schemas import MAX_ID, PASSWORD_MAX_BYTES
from app.settings import JWT_SECRET_MIN_BYTES, ConfigError

ALGORITHM = "HS256"
BEARER = "bearer"


class PasswordHasher:
    """bcrypt with a fixed cost, off the event loop."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        # Checked against when there is no real hash, so that an unknown
        # user costs the same work as a known one with a wrong password.
        self._dummy: bytes | None = None

    async def prepare(self) -> None:
        """Compute the stand-in hash, so no login pays for it."""
        if self._dummy is None:
            self._dummy = (await self.hash(secrets.token_hex(16))).encode()

    async def hash(self, password: str) -> str:
        """The bcrypt hash of ``password``."""
        salt = bcrypt.gensalt(self.rounds)
        digest = await asyncio.get_running_loop().run_in_executor(
            None, bcrypt.hashpw, password.encode(), salt
        )
        return digest.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        """True when ``password`` matches ``hashed``; as slow when it is None."""
        candidate = password.encode()
        if hashed is None or len(candidate) > PASSWORD_MAX_BYTES:
            await self.prepare()
            assert self._dummy is not None
            await self._check(b"\0", self._dummy)  # the same work, no match
            return False
        return await self._check(candidate, hashed.encode())

    @staticmethod
    async def _check(candidate: bytes, hashed: bytes) -> bool:
        return await asyncio.get_running_loop().run_in_executor(
            None, bcrypt.checkpw, candidate, hashed
        )


@dataclass(frozen=True)
class IssuedToken:
    """A signed token and the moment it stops being accepted."""

    token: str
    expires_at: datetime


class TokenCodec:
    """Issues and checks HS256 tokens naming a user id."""

    def __init__(self, secret: str, ttl_seconds: int) -> None:
        if len(secret.encode()) < JWT_SECRET_MIN_BYTES:
            raise ConfigError(
                "DEARDIARY_JWT_SECRET",
                f"must be at least {JWT_SECRET_MIN_BYTES} bytes long",
            )
        self._secret = secret
        self._ttl = timedelta(seconds=ttl_seconds)

    def issue(self, user_id: int) -> IssuedToken:
        """A fresh token for ``user_id``."""
        # JWT times are whole seconds; the answer's expiry says the same.
        issued = datetime.now(UTC).replace(microsecond=0)
        expires = issued + self._ttl
        claims = {"sub": str(user_id), "iat": issued, "exp": expires}
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return IssuedToken(token, expires)

    def user_id(self, token: str) -> int:
        """The user a valid token names; 401 for any other token."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("the token has expired; log in again") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenInvalid("the token is not valid") from exc

        subject = claims["sub"]
        if not _is_id(subject):
            raise TokenInvalid("the token is not valid")
        return int(subject)


def _is_id(subject: object) -> bool:
    """True when ``subject`` is the decimal text of a positive 64-bit id."""
    if not isinstance(subject, str) or len(subject) > len(str(MAX_ID)):
        return False
    return subject.isascii() and subject.isdigit() and 1 <= int(subject) <= MAX_ID


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if header is None:
        raise TokenMissing("an Authorization: Bearer <token> header is required")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    # A JWT is ASCII; other bytes reach here as surrogate escapes that
    # the token decoder cannot even encode.
    if scheme.lower() != BEARER or not token or " " in token or not token.isascii():
        raise TokenInvalid("the Authorization header must be 'Bearer <token>'")
    return token
