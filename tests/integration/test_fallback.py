"""Without transactions the unique indexes still hold the rules (SPEC 6).

The store here presents itself as a standalone mongod: the app says so once
at startup, runs its steps one by one, and relies on the unique indexes on
(model_id, version) and on the single PRODUCTION version per model.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import lineage, register

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PRODUCTION = 3
ARCHIVED = 4


def _startup_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.get_records("setup")
        if record.name.startswith("deardiary") and record.levelno == logging.WARNING
    ]


async def _versions(api: TestClient, model_id: int) -> list[dict[str, Any]]:
    response = await api.get(f"/modelversion/model/{model_id}?limit=200")
    body = await response.json()
    assert response.status == 200, body
    return list(body["data"])


async def _promote(api: TestClient, version_id: int) -> int:
    response = await api.patch(
        f"/modelversion/{version_id}", json={"stage_id": PRODUCTION}
    )
    await response.read()
    return response.status


async def test_standalone_server_warns_once_that_it_has_no_transactions(
    standalone_api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    warnings = _startup_warnings(caplog)

    assert len(warnings) == 1, warnings
    assert "no transactions" in warnings[0]


async def test_replica_set_server_starts_without_warning(
    real_api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert _startup_warnings(caplog) == []


async def test_standalone_racing_promotions_leave_one_production_version(
    standalone_api: TestClient,
) -> None:
    ids = await lineage(standalone_api)
    version_ids = [
        await register(standalone_api, ids["model_id"], ids["iteration_id"])
        for _ in range(16)
    ]

    for round_ in range(5):
        statuses = await asyncio.gather(
            *(_promote(standalone_api, version_id) for version_id in version_ids)
        )

        assert statuses == [200] * 16, (round_, statuses)
        stages = sorted(
            v["stage_id"] for v in await _versions(standalone_api, ids["model_id"])
        )
        assert stages == [PRODUCTION] + [ARCHIVED] * 15, (round_, stages)


async def test_standalone_concurrent_registrations_number_one_to_n(
    standalone_api: TestClient,
) -> None:
    ids = await lineage(standalone_api)

    created = await asyncio.gather(
        *(
            standalone_api.post(
                f"/modelversion/model/{ids['model_id']}",
                json={"iteration_id": ids["iteration_id"]},
            )
            for _ in range(48)
        )
    )

    assert [response.status for response in created] == [201] * 48
    numbers = [v["version"] for v in await _versions(standalone_api, ids["model_id"])]
    assert numbers == list(range(1, 49))
    assert len(set(numbers)) == 48
