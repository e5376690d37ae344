"""What the app reads from the server's hello reply (app.mongo)."""

from __future__ import annotations

from typing import Any

import pytest

from app.mongo import ServerFeatures, server_features


class _Admin:
    def __init__(self, hello: dict[str, Any] | None) -> None:
        self._hello = hello

    async def command(self, name: str) -> dict[str, Any]:
        assert name == "hello"
        if self._hello is None:
            raise NotImplementedError(name)
        return self._hello


class _Client:
    def __init__(self, hello: dict[str, Any] | None) -> None:
        self.admin = _Admin(hello)


@pytest.mark.parametrize(
    ("hello", "expected"),
    [
        # MongoDB 7.0 as a replica set member: $lookup sub-pipelines, no
        # bulkWrite across collections.
        (
            {"setName": "rs0", "maxWireVersion": 21},
            ServerFeatures(transactions=True, joins=True, bulk_writes=False),
        ),
        # MongoDB 8.0 behind mongos.
        (
            {"msg": "isdbgrid", "maxWireVersion": 25},
            ServerFeatures(transactions=True, joins=True, bulk_writes=True),
        ),
        # A standalone 8.0: the features, but no transactions to use them in.
        (
            {"maxWireVersion": 25},
            ServerFeatures(transactions=False, joins=True, bulk_writes=True),
        ),
        # MongoDB 4.4: no index use in $lookup sub-pipelines yet.
        (
            {"setName": "rs0", "maxWireVersion": 9},
            ServerFeatures(transactions=True, joins=False, bulk_writes=False),
        ),
    ],
)
async def test_server_features_follow_the_wire_version(
    hello: dict[str, Any], expected: ServerFeatures
) -> None:
    assert await server_features(_Client(hello)) == expected


async def test_a_mock_that_cannot_say_hello_has_no_features() -> None:
    assert await server_features(_Client(None)) == ServerFeatures()
