"""Users, logins, and the admin that exists from the first start.

- With auth off every request acts as a seeded admin that has no password.
- With auth on, the first start creates the admin from
  ``DEARDIARY_ADMIN_USERNAME`` and ``DEARDIARY_ADMIN_PASSWORD`` unless an
  admin who can log in exists already.
- A user reads, changes and deletes their own record, an admin any record;
  only an admin creates and lists users or grants ``is_admin``. The last
  admin cannot be demoted or deleted.
- A login costs one bcrypt check whether or not the user exists; after too
  many failures for one username within a window, logins for it are refused
  with 429 until the window ends.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from app.auth import PasswordHasher, TokenCodec
from app.errors import (
    Conflict,
    InvalidCredentials,
    NotFound,
    SameUserRequired,
    TokenInvalid,
    TooManyRequests,
)
from app.schemas import (
    Credentials,
    Page,
    TokenEnvelope,
    User,
    UserCreate,
    UserUpdate,
    now,
)
from app.services.access import Access, Actor
from app.services.base import (
    NEXT_REVISION,
    Expected,
    Service,
    check_revision,
    missing,
)
from app.settings import PREFIX, ConfigError
from app.store.database import Document, Session, Store
from app.store.errors import DuplicateKey

log = logging.getLogger("deardiary.services.users")

DEFAULT_ADMIN = "admin"
LOGIN_FAILURES = "loginfailures"
# Written by every demotion or deletion of an admin, so that two racing
# ones conflict instead of both removing "the other" last admin.
ADMIN_GUARD = "admins"


async def ensure_admin(store: Store, username: str | None) -> Actor:
    """The admin user, created on first start; safe when servers race."""
    username = username or DEFAULT_ADMIN
    doc = await store.find_one("users", {"username": username})
    if doc is None:
        user_id = await store.next_id("users")
        doc = {
            "_id": user_id,
            "username": username,
            "first_name": "",
            "last_name": "",
            "is_admin": True,
            "created_date": now(),
            "revision": 1,
        }
        try:
            await store.insert("users", doc)
        except DuplicateKey:
            doc = await store.find_one("users", {"username": username})
    assert doc is not None  # inserted, or inserted by a racing server
    return Actor(user_id=doc["_id"], username=username, is_admin=True)


class UserService(Service):
    collection = "users"
    entity = "user"

    def __init__(self, store: Store, access: Access, hasher: PasswordHasher) -> None:
        super().__init__(store, access)
        self.hasher = hasher

    async def get(self, actor: Actor, user_id: int) -> User:
        """The user, for themselves or an admin."""
        _require_self(actor, user_id, "read")
        doc = await self.store.get(self.collection, user_id)
        if doc is None:
            raise missing(self.entity, user_id)
        return User.from_doc(doc)  # type: ignore[no-any-return]

    async def page(self, actor: Actor, *, limit: int, offset: int) -> Page[User]:
        """Every user, by id; for admins."""
        self.access.require_admin(actor, "list users")
        docs, total = await self.store.page(
            self.collection, {}, sort="_id", limit=limit, offset=offset
        )
        data = [User.from_doc(doc) for doc in docs]
        return Page(data=data, total=total, limit=limit, offset=offset)

    async def create(self, actor: Actor, body: UserCreate) -> int:
        """Create a user who is not an admin; usernames are unique."""
        self.access.require_admin(actor, "create users")
        if await self.store.exists(self.collection, {"username": body.username}):
            raise _name_taken(body.username)

        password_hash = await self.hasher.hash(body.password)
        user_id = await self.store.next_id(self.collection)
        doc = {
            "_id": user_id,
            **body.model_dump(exclude={"password"}),
            "is_admin": False,
            "password_hash": password_hash,
            "created_date": now(),
            "revision": 1,
        }

        async def insert(session: Session) -> int:
            await self.store.insert(self.collection, doc, session=session)
            return user_id

        try:
            return await self.store.transaction(insert, optional=True)
        except DuplicateKey as exc:
            raise _name_taken(body.username) from exc

    async def update(
        self,
        actor: Actor,
        user_id: int,
        body: UserUpdate,
        *,
        expected: Expected = None,
    ) -> None:
        """Change a user's names or password; ``is_admin`` is for admins."""
        _require_self(actor, user_id, "update")
        if body.is_admin is not None:
            self.access.require_admin(actor, "set is_admin")

        changes = body.changes()
        if "password" in changes:
            changes["password_hash"] = await self.hasher.hash(changes.pop("password"))

        async def apply(session: Session) -> None:
            doc = await self._existing(user_id, session)
            check_revision(self.entity, doc, expected)
            if doc["is_admin"] and changes.get("is_admin") is False:
                await self._keep_an_admin(user_id, session)
            await self._set(
                user_id, changes, when=now(), expected=expected, session=session
            )

        await self.store.transaction(apply)

    async def delete(
        self, actor: Actor, user_id: int, *, expected: Expected = None
    ) -> None:
        """Delete a user and their permission records together."""
        _require_self(actor, user_id, "delete")

        async def remove(session: Session) -> None:
            doc = await self._existing(user_id, session)
            check_revision(self.entity, doc, expected)
            if doc["is_admin"]:
                await self._keep_an_admin(user_id, session)
            await self.store.delete(
                "userpermissions", {"user_id": user_id}, session=session
            )
            await self._remove(user_id, expected=expected, session=session)

        await self.store.transaction(remove)

    async def actor(self, user_id: int) -> Actor | None:
        """The user with their permission flags, in one query; None if gone."""
        docs = await self.store.aggregate(
            self.collection,
            [
                {"$match": {"_id": user_id}},
                {
                    "$lookup": {
                        "from": "userpermissions",
                        "localField": "_id",
                        "foreignField": "user_id",
                        "as": "permissions",
                    }
                },
                {"$project": {"password_hash": 0}},
            ],
        )
        if not docs:
            return None
        doc = docs[0]
        return Actor.from_records(
            doc["_id"], doc["username"], bool(doc["is_admin"]), doc["permissions"]
        )

    async def bootstrap_admin(
        self, username: str | None, password: str | None
    ) -> Actor:
        """An admin who can log in, made from the settings if there is none."""
        await self.hasher.prepare()
        loginable = {"is_admin": True, "password_hash": {"$type": "string"}}
        found = await self.store.find_one(self.collection, loginable)
        if found is not None:
            return Actor(found["_id"], found["username"], is_admin=True)
        username = (username or "").strip()
        if not username:
            raise _bootstrap_error("ADMIN_USERNAME")
        if not password:
            raise _bootstrap_error("ADMIN_PASSWORD")

        changes = {
            "is_admin": True,
            "password_hash": await self.hasher.hash(password),
        }
        query = {"username": username}
        update = {"$set": changes, **NEXT_REVISION}
        if not await self.store.update(self.collection, query, update):
            await self._insert_admin(username, changes)
        log.info("admin user %s can log in now", username)
        made = await self.store.find_one(self.collection, query)
        assert made is not None  # updated or inserted just now
        return Actor(made["_id"], username, is_admin=True)

    async def _insert_admin(self, username: str, changes: Document) -> None:
        doc = {
            "_id": await self.store.next_id(self.collection),
            "username": username,
            "first_name": "",
            "last_name": "",
            **changes,
            "created_date": now(),
            "revision": 1,
        }
        try:
            await self.store.insert(self.collection, doc)
        except DuplicateKey:
            # A server starting beside this one created the user first.
            query = {"username": username}
            update = {"$set": changes, **NEXT_REVISION}
            await self.store.update(self.collection, query, update)

    async def _existing(self, user_id: int, session: Session) -> Document:
        doc = await self.store.get(self.collection, user_id, session=session)
        if doc is None:
            raise missing(self.entity, user_id)
        return doc

    async def _keep_an_admin(self, user_id: int, session: Session) -> None:
        """Refuse to take away the last admin."""
        await self.store.seed_counter(ADMIN_GUARD, session=session)
        await self.store.bump("counters", ADMIN_GUARD, field="guard", session=session)
        others = {"is_admin": True, "_id": {"$ne": user_id}}
        if not await self.store.exists(self.collection, others, session=session):
            raise Conflict(
                f"user {user_id} is the last admin; make another user an admin first"
            )


class LoginThrottle:
    """Counts failed logins per username in a fixed window.

    The counts live in MongoDB, so every server process sees the same ones;
    a TTL index removes old windows, and a window found expired is dropped
    here too, since the TTL monitor runs only once a minute.
    """

    def __init__(self, store: Store, *, max_failures: int, window_seconds: int) -> None:
        self.store = store
        self.max_failures = max_failures
        self.window = timedelta(seconds=window_seconds)

    async def check(self, username: str) -> None:
        """Raise 429 while ``username`` has used up its failures."""
        doc = await self.store.find_one(LOGIN_FAILURES, {"_id": username})
        if doc is None or doc["failures"] < self.max_failures:
            return
        remaining = (_aware(doc["expires_at"]) - now()).total_seconds()
        if remaining > 0:
            raise TooManyRequests(
                "too many failed logins for this username; retry later",
                retry_after=max(1, math.ceil(remaining)),
            )

    async def failed(self, username: str) -> None:
        """Count one more failure for ``username``."""
        moment = now()
        key = {"_id": username}
        bump = {"$inc": {"failures": 1}}
        await self.store.delete(LOGIN_FAILURES, {**key, "expires_at": {"$lte": moment}})
        if await self.store.update(LOGIN_FAILURES, key, bump):
            return
        doc = {**key, "failures": 1, "expires_at": moment + self.window}
        try:
            await self.store.insert(LOGIN_FAILURES, doc)
        except DuplicateKey:
            await self.store.update(LOGIN_FAILURES, key, bump)

    async def succeeded(self, username: str) -> None:
        """Forget the failures of ``username``."""
        await self.store.delete(LOGIN_FAILURES, {"_id": username})


class AuthService:
    """Logins and tokens; present whether or not auth is on."""

    def __init__(
        self,
        store: Store,
        users: UserService,
        tokens: TokenCodec | None,
        throttle: LoginThrottle,
    ) -> None:
        self.store = store
        self.users = users
        self.tokens = tokens
        self.throttle = throttle

    async def login(self, credentials: Credentials) -> TokenEnvelope:
        """A token for a username and password, or 401 INVALID_CREDENTIALS.

        Unknown users and wrong passwords cost the same work and get the
        same answer.
        """
        tokens = self._tokens()
        username = credentials.username.strip()
        await self.throttle.check(username)

        doc = await self.store.find_one("users", {"username": username})
        hashed = None if doc is None else doc.get("password_hash")
        matched = await self.users.hasher.verify(credentials.password, hashed)
        if doc is None or not matched:
            await self.throttle.failed(username)
            raise InvalidCredentials("the username or password is wrong")

        await self.throttle.succeeded(username)
        return _envelope(tokens, doc)

    async def refresh(self, actor: Actor) -> TokenEnvelope:
        """A new token for the user a valid token names."""
        tokens = self._tokens()
        doc = await self.store.get("users", actor.user_id)
        if doc is None:
            raise TokenInvalid("the token's user no longer exists")
        return _envelope(tokens, doc)

    async def actor_for(self, token: str) -> Actor:
        """The user a token names, with their flags; 401 if invalid."""
        user_id = self._tokens().user_id(token)
        actor = await self.users.actor(user_id)
        if actor is None:
            raise TokenInvalid("the token's user no longer exists")
        return actor

    def _tokens(self) -> TokenCodec:
        if self.tokens is None:
            raise NotFound("authentication is off on this server; no token needed")
        return self.tokens


def _envelope(tokens: TokenCodec, doc: Document) -> TokenEnvelope:
    issued = tokens.issue(int(doc["_id"]))
    return TokenEnvelope(
        access_token=issued.token,
        expires_at=issued.expires_at,
        user=User.from_doc(doc),
    )


def _require_self(actor: Actor, user_id: int, action: str) -> None:
    if not actor.is_admin and actor.user_id != user_id:
        raise SameUserRequired(
            f"only the user themselves or an admin may {action} user {user_id}"
        )


def _name_taken(username: str) -> Conflict:
    return Conflict(f"a user named {username!r} exists")


def _bootstrap_error(name: str) -> ConfigError:
    return ConfigError(
        PREFIX + name,
        "is required on the first start with auth on, while no admin can log in",
    )


def _aware(moment: Any) -> datetime:
    """A stored time as an aware UTC datetime, whatever the client gives."""
    assert isinstance(moment, datetime)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
