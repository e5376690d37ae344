"""Log configuration: formats, levels and what must never be logged."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from app.logs import JsonFormatter, TextFormatter, configure
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


def _record_at(created: float) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "deardiary.test", "msg": "hello", "levelno": 20}
    )
    record.levelname = "INFO"
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    return record


# Moments within a second, on its edges, and across a day and a year.
MOMENTS = [
    1_700_000_000.0,
    1_700_000_000.0004,
    1_700_000_000.1229999,
    1_700_000_000.9994,
    1_700_000_000.9999996,
    1_700_000_001.5,
    1_735_689_599.9991,
    1_735_689_600.0001,
]


def test_text_lines_date_each_moment_as_the_standard_formatter_does() -> None:
    # The text formatter formats a second's date once; its lines must not
    # differ from those of the plain format it stands for.
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = TextFormatter()

    for created in MOMENTS + MOMENTS[::-1]:
        record = _record_at(created)
        assert ours.format(record) == plain.format(record)


def test_json_lines_date_each_moment_in_utc_to_the_millisecond() -> None:
    ours = JsonFormatter()

    for created in MOMENTS + MOMENTS[::-1]:
        entry = json.loads(ours.format(_record_at(created)))
        expected = datetime.fromtimestamp(created, UTC)
        assert entry["time"] == expected.isoformat(timespec="milliseconds")


def test_text_lines_with_arguments_or_a_traceback_read_as_the_standard_ones() -> None:
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = TextFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.makeLogRecord(
            {"name": "deardiary.test", "msg": "failed %s", "args": ("x",)}
        )
        failed.exc_info = sys.exc_info()
    with_args = logging.makeLogRecord(
        {"name": "deardiary.test", "msg": "%s %d", "args": ("GET", 200)}
    )
    stacked = logging.makeLogRecord(
        {"name": "deardiary.test", "msg": "here", "stack_info": "Stack (most..."}
    )

    for record in (failed, with_args, stacked):
        assert ours.format(record) == plain.format(record)
    assert "ValueError: boom" in ours.format(failed)
