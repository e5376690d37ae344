"""The example script, run in-process against the app on SecantusDB."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp.test_utils import TestClient

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


def _load_demo() -> ModuleType:
    """examples/ is no package: load the script from its path."""
    spec = importlib.util.spec_from_file_location("deardiary_demo", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_demo_ends_with_version_2_in_production_and_1_archived(
    real_api: TestClient,
) -> None:
    demo = _load_demo()

    outcome = await demo.run_demo(str(real_api.make_url("")))

    response = await real_api.get(f"/modelversion/model/{outcome.model_id}")
    versions = (await response.json())["data"]
    stages = {v["version"]: v["stage_id"] for v in versions}
    assert stages == {1: demo.ARCHIVED, 2: demo.PRODUCTION}
    live = next(v for v in versions if v["stage_id"] == demo.PRODUCTION)
    assert live["id"] == outcome.production_version_id
    assert outcome.accuracy > 0.9


async def test_demo_exits_1_with_one_line_when_the_registry_is_missing(
    real_api: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = _load_demo()
    url = str(real_api.make_url("/no-registry-here"))

    code = await demo.run_or_explain(url)

    assert code == 1
    assert capsys.readouterr().err.startswith("demo failed: GET /no-registry-here")
