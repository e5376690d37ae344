"""Driver errors, translated at the store boundary.

A duplicate key becomes `DuplicateKey` (a 409 unless the caller knows
better), an unreachable server `DatabaseUnavailable` (503). `Contention`
never leaves the store: it makes a transaction body run again.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import ParamSpec, TypeVar

from pymongo.errors import (
    BulkWriteError,
    ClientBulkWriteException,
    ConnectionFailure,
    DuplicateKeyError,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from app.errors import Conflict, DatabaseUnavailable

P = ParamSpec("P")
T = TypeVar("T")

DUPLICATE_KEY = 11000


class DuplicateKey(Conflict):
    """A write hit a unique index; `index` names it."""

    def __init__(self, index: str) -> None:
        super().__init__(f"a unique rule was violated ({index})")
        self.index = index


class Contention(Exception):
    """A write found a document changed since the transaction body read
    it; `Store.transaction` runs the body again."""


def index_name(exc: DuplicateKeyError) -> str:
    """The unique index a duplicate key error names."""
    details = exc.details or {}
    message = str(details.get("errmsg", ""))
    # The server names the index in the message ("index: <name> dup key"),
    # but the key pattern is the structured part; prefer it.
    pattern = details.get("keyPattern")
    if isinstance(pattern, Mapping):
        return ",".join(str(key) for key in pattern)
    return message


def translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn driver errors of one store call into registry errors.

    Inside a transaction connection errors pass through untouched: the
    driver's transaction helper retries on their error labels.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except DuplicateKeyError as exc:
            raise DuplicateKey(index_name(exc)) from exc
        except BulkWriteError as exc:
            # insert_many reports a duplicate key among its write errors.
            first = _first_duplicate(exc.details)
            if first is None:
                raise
            raise DuplicateKey(index_name(first)) from exc
        except (ConnectionFailure, ServerSelectionTimeoutError) as exc:
            if kwargs.get("session") is not None:
                raise
            raise DatabaseUnavailable("the database is unreachable") from exc

    return wrapper


def unwrapped(exc: ClientBulkWriteException) -> PyMongoError:
    """The error a client bulkWrite failed with, as a plain command's.

    The wrapper hides the labels of a top-level error (the driver retries
    a transaction on TransientTransactionError) and reports a duplicate key
    as a generic write error; both are taken back out.
    """
    if isinstance(exc.error, PyMongoError):
        return exc.error
    return _first_duplicate(exc.details) or exc


def _first_duplicate(details: Mapping[str, object] | None) -> DuplicateKeyError | None:
    """The first write error of a bulk write's ``details``, as a duplicate
    key error, if it is one."""
    errors = (details or {}).get("writeErrors")
    first = next(iter(errors), None) if isinstance(errors, list) else None
    if isinstance(first, dict) and first.get("code") == DUPLICATE_KEY:
        return DuplicateKeyError(str(first.get("errmsg", "")), DUPLICATE_KEY, first)
    return None
