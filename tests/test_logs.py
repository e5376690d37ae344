"""Log configuration: formats, levels and what must never be logged."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from app.logs import configure
from app.settings import Settings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    pymongo_level = logging.getLogger("pymongo").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("pymongo").setLevel(pymongo_level)


def test_debug_level_keeps_driver_commands_out_of_the_log() -> None:
    configure(Settings(log_level="DEBUG"))

    assert logging.getLogger("deardiary").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("pymongo.command").isEnabledFor(logging.DEBUG)


def test_json_format_writes_one_object_per_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure(Settings(log_format="json"))

    logging.getLogger("deardiary.test").info("hello %s", "world", extra={"n": 1})

    line = capsys.readouterr().err.strip()
    entry = json.loads(line)
    assert entry["message"] == "hello world"
    assert entry["logger"] == "deardiary.test"
    assert entry["n"] == 1
