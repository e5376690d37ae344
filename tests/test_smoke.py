from aiohttp.test_utils import TestClient

from tests.helpers import lineage, register


async def test_registered_version_starts_at_one_in_no_stage(api: TestClient) -> None:
    ids = await lineage(api)

    version_id = await register(api, ids["model_id"], ids["iteration_id"])

    response = await api.get(f"/modelversion/{version_id}")
    body = await response.json()
    assert response.status == 200
    assert body["version"] == 1
    assert body["stage_id"] == 1
