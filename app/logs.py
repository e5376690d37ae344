"""Logging setup: every logger under ``deardiary``, text or JSON lines.

Lines written while a request is handled carry its id (``request_id``),
so that every line about one request can be found from its access line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import RequestPayloadError

from app.settings import Settings

# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

# The id of the request being handled, set by the request middleware.
REQUEST_ID: ContextVar[str | None] = ContextVar("deardiary_request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Adds the current request's id to records that do not carry one."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


class _Seconds:
    """The date and time of a log line to the second, formatted once per
    second: every request writes an access line, and formatting its date
    was a tenth of the line's cost."""

    def __init__(self, render: Callable[[int], str]) -> None:
        self._render = render
        self._second = -1
        self._text = ""

    def text(self, created: float) -> str:
        """The rendered second that ``created`` falls in."""
        second = int(created)
        if second != self._second:
            # Handlers format under their lock: one line at a time.
            self._text = self._render(second)
            self._second = second
        return self._text


class TextFormatter(logging.Formatter):
    """``date time,ms LEVEL logger: message`` in local time."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._seconds = _Seconds(
            lambda second: time.strftime(
                self.default_time_format, self.converter(second)
            )
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return f"{self._seconds.text(record.created)},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        # The common line, the access line of every request among them,
        # laid out directly as the template above lays it out (a test
        # holds the two to the same text), without its mapping look-ups.
        when, message = self.formatTime(record), record.getMessage()
        record.asctime, record.message = when, message
        return f"{when} {record.levelname} {record.name}: {message}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the fields given in ``extra``."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _Seconds(
            lambda second: datetime.fromtimestamp(second, UTC).isoformat()[:-6]
        )

    def _time(self, created: float) -> str:
        # As datetime.fromtimestamp has it: rounded to the microsecond
        # (half to even), then cut to the millisecond.
        second = int(created)
        micros = round((created - second) * 1e6)
        if micros == 1_000_000:
            second, micros = second + 1, 0
        return f"{self._seconds.text(second)}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class MalformedRequestFilter(logging.Filter):
    """Turns aiohttp's traceback for a request it could not parse into one
    INFO line.

    Such a request is the client's fault, answered 400 before any route
    runs: no server error. The parser's message quotes the offending bytes,
    which may be a header with a token in it; the line names only the
    error's kind and the client's address.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = _parser_error(record.exc_info[1] if record.exc_info else None)
        if exc is None:
            return True
        level = min(record.levelno, logging.INFO)
        if not logging.getLogger(record.name).isEnabledFor(level):
            return False
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.msg = "malformed request from %s answered %d (%s)"
        args = record.args if isinstance(record.args, tuple) else ()
        remote = args[0] if args else "?"
        record.args = (remote, exc.code, type(exc).__name__)
        record.exc_info = record.exc_text = None
        return True


def _parser_error(exc: BaseException | None) -> HttpProcessingError | None:
    """The parser's error behind ``exc``, if that is what it is.

    A body that does not decode (bad gzip data, a broken chunk) surfaces
    as RequestPayloadError when aiohttp drains what the handler left
    unread, after the handler answered; its cause is the parser's error.
    """
    if isinstance(exc, RequestPayloadError):
        exc = exc.__cause__
    return exc if isinstance(exc, HttpProcessingError) else None


def configure(settings: Settings) -> None:
    """Send log lines to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(MalformedRequestFilter())
    # No line shows the calling function, the thread or the multiprocessing
    # name; skipping their lookup makes every line, the access line of each
    # request among them, cheaper (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # The driver's DEBUG lines quote whole commands, documents and password
    # hashes included; they never go to the log.
    logging.getLogger("pymongo").setLevel(max(logging.INFO, root.level))
