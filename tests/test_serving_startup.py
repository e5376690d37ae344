"""What the server checks before it serves, how it takes stop signals, and
how it logs a request it cannot parse.

A problem the user must fix (a taken port, a data directory that is a
file or held by another server, no store to run) is one line naming the
variable and exit code 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.http_exceptions import BadHttpMessage, ContentEncodingError
from aiohttp.test_utils import TestClient
from aiohttp.web import RequestPayloadError

from app import __main__ as entry
from app import embedded, serve
from app.embedded import claimed_data_dir
from app.logs import MalformedRequestFilter, configure
from app.settings import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    pymongo_level = logging.getLogger("pymongo").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("pymongo").setLevel(pymongo_level)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def _run_server(**env: str) -> tuple[int, list[str]]:
    """Run ``python -m app`` with these variables: exit code, output lines."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEARDIARY_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        cwd=ROOT,
        env=environ | env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines()


# Before serving -------------------------------------------------------------


async def test_a_taken_port_is_one_line_and_exit_2_before_any_announcement(
    taken_port: int, tmp_path: Path
) -> None:
    code, lines = await _run_server(
        DEARDIARY_PORT=str(taken_port), DEARDIARY_DATA_DIR=str(tmp_path)
    )

    assert code == 2
    assert lines == [
        f"configuration error: DEARDIARY_PORT: cannot listen on "
        f"127.0.0.1:{taken_port}: Address already in use"
    ]


async def test_a_data_dir_that_is_a_file_is_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").write_text("not a directory")

    code, lines = await _run_server(DEARDIARY_DATA_DIR=str(tmp_path / "data"))

    assert code == 2
    assert lines == [
        f"configuration error: DEARDIARY_DATA_DIR: {tmp_path / 'data'} "
        "is not a directory"
    ]


async def test_a_data_dir_held_by_another_server_is_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    with claimed_data_dir(tmp_path):
        code, lines = await _run_server(DEARDIARY_DATA_DIR=str(tmp_path))

    assert code == 2
    assert lines == [
        f"configuration error: DEARDIARY_DATA_DIR: {tmp_path} is in use by "
        f"another server (pid {os.getpid()})"
    ]


def test_a_data_dir_is_free_again_once_released(tmp_path: Path) -> None:
    with claimed_data_dir(tmp_path):
        pass

    with claimed_data_dir(tmp_path):
        assert (tmp_path / embedded.LOCK_FILE).read_text() == f"{os.getpid()}\n"


def test_a_data_dir_under_a_file_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")

    with pytest.raises(ConfigError) as refused, claimed_data_dir(tmp_path / "file/x"):
        pass

    assert refused.value.variable == "DEARDIARY_DATA_DIR"
    assert "Not a directory" in str(refused.value)


def test_no_embedded_store_installed_names_the_mongo_uri(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    for key in [k for k in os.environ if k.startswith("DEARDIARY_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("DEARDIARY_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(embedded, "EXECUTABLE", "deardiary-test-no-such-store")
    monkeypatch.setattr(serve, "bind", _must_not_bind)

    code = entry.main()

    [line] = capsys.readouterr().err.splitlines()
    assert code == 2
    assert line.startswith(
        "configuration error: DEARDIARY_MONGO_URI: is not set and the embedded "
        "store (deardiary-test-no-such-store) is not installed"
    )


def _must_not_bind(settings: Settings) -> socket.socket:
    raise AssertionError("the server went on to listen")


def test_an_unresolvable_host_names_the_host_variable() -> None:
    settings = Settings(host="no-such-host.invalid")

    with pytest.raises(ConfigError) as refused:
        serve.bind(settings)

    assert refused.value.variable == "DEARDIARY_HOST"


def test_a_relative_data_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    settings = load_settings({"DEARDIARY_DATA_DIR": "var/../data"})

    assert settings.data_dir == tmp_path.resolve() / "data"
    assert Settings().data_dir == tmp_path.resolve() / ".deardiary"


# Stop signals ---------------------------------------------------------------


async def test_a_second_stop_signal_is_noted_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        stop = serve._on_stop_signals(asyncio.Event())
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 5)

        with caplog.at_level(logging.INFO, logger="deardiary.serve"):
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.1)
        serve._ignore_stop_signals()

        assert caplog.messages == ["already stopping: SIGINT ignored"]
        # Past the event loop too, until the process exits.
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Requests the server cannot parse -------------------------------------------


async def test_a_malformed_request_is_one_info_line_without_its_bytes(
    api: TestClient, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure(Settings())
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(
        b"GET /health HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer secret-token-123\x01\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()

    # The test server writes aiohttp's own access line too; the real one
    # does not (see app.serve).
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if "aiohttp.access" not in line]
    assert answer.startswith(b"HTTP/1.0 400 ")
    assert " INFO aiohttp.server: malformed request from 127.0.0.1 answered 400 (" in (
        line
    )
    assert "Traceback" not in err and "secret-token-123" not in err


def test_other_records_pass_the_malformed_request_filter_unchanged() -> None:
    record = logging.makeLogRecord(
        {"name": "aiohttp.server", "levelno": logging.ERROR, "msg": "boom"}
    )
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        record.exc_info = sys.exc_info()

    assert MalformedRequestFilter().filter(record)
    assert record.levelno == logging.ERROR and record.exc_info is not None


def test_a_malformed_request_below_the_level_is_dropped(
    restore_logging: None,
) -> None:
    configure(Settings(log_level="WARNING"))
    record = logging.makeLogRecord(
        {
            "name": "aiohttp.server",
            "levelno": logging.ERROR,
            "msg": "Error handling request from %s",
            "args": ("10.0.0.1",),
            "exc_info": (BadHttpMessage, BadHttpMessage("bad"), None),
        }
    )

    assert not MalformedRequestFilter().filter(record)


def test_a_body_that_did_not_decode_is_one_info_line(restore_logging: None) -> None:
    configure(Settings())
    # What aiohttp logs when it drains a body that is not the gzip data
    # its Content-Encoding says, after the handler answered 400.
    try:
        try:
            raise ContentEncodingError("Can not decode content-encoding: gzip")
        except ContentEncodingError as cause:
            raise RequestPayloadError("payload error") from cause
    except RequestPayloadError:
        exc_info = sys.exc_info()
    record = logging.makeLogRecord(
        {
            "name": "aiohttp.server",
            "levelno": logging.ERROR,
            "msg": "Unhandled exception",
            "exc_info": exc_info,
        }
    )

    assert MalformedRequestFilter().filter(record)
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage() == (
        "malformed request from ? answered 400 (ContentEncodingError)"
    )
