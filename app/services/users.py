"""Users: the seeded admin that requests act as while auth is off."""

from __future__ import annotations

from app.schemas import now
from app.services.access import Actor
from app.store.database import DuplicateKey, Store

DEFAULT_ADMIN = "admin"


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
        }
        try:
            await store.insert("users", doc)
        except DuplicateKey:
            doc = await store.find_one("users", {"username": username})
    assert doc is not None  # inserted, or inserted by a racing server
    return Actor(user_id=doc["_id"], username=username, is_admin=True)
