"""Structured logs: one JSON object per line on stderr.

Fields go in ``extra={"fields": {...}}``. Request logs carry method, path, status, duration,
request id and user id — never bodies, query values or sample data. The access log (one line per
request) goes through :class:`AccessLog`, which writes its lines in batches while the app serves.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

import orjson
import trio

_HANDLER_MARK = "_vigil_json_handler"


def rfc3339_millis(created: float) -> str:
    """A wall-clock instant as RFC 3339 UTC with milliseconds: ``2026-11-24T08:00:00.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"


def server_time() -> str:
    """The ``Server-Time`` header's value (API.md "Conventions"): now, for clients' clock offsets."""
    return rfc3339_millis(time.time())


class JsonFormatter(logging.Formatter):
    """One compact JSON object per record. Every request writes one (the access log), so this is on
    the hot path: orjson, and the timestamp from ``time.gmtime`` rather than ``datetime``."""

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        out: dict[str, Any] = {
            # Wall-clock time is for humans reading logs; durations come from trio's clock.
            "ts": rfc3339_millis(created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(out, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):
            # What orjson refuses and ``default`` cannot mend (non-str keys, ints past 64 bits).
            return json.dumps(out, default=str, separators=(",", ":"))


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> None:
    """Route every logger (ours, hypercorn's, quart's) through one JSON handler on the root.
    Idempotent: a second call replaces the handler instead of doubling every line."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Quart installs its own handler on first use of app.logger; let ours do the formatting.
    for name in ("quart.app", "quart.serving", "hypercorn.error", "hypercorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True


class AccessLog:
    """The one-line-per-request log, written in batches while the app is serving.

    A log record built, formatted and written between two requests' worth of other code costs
    several times what it costs among a run of its kind (the interpreter's caches are cold), and
    it is paid on every response. So while :meth:`run` is running (the app's serving lifetime),
    :meth:`add` only appends the line's fields and its wall-clock time; the task writes what
    waited, through ``logger`` and its handlers as usual, ``interval`` seconds after the first
    line of a batch (sooner once ``batch`` lines wait) and when it stops. Each record keeps the time
    its request finished. Outside serving (a test client without the app's lifespan) lines are
    written at once. A hard crash loses at most ``interval`` of access lines; error logs do not go
    through here.
    """

    def __init__(self, logger: logging.Logger, *, interval: float = 0.2, batch: int = 512) -> None:
        if interval <= 0 or batch < 1:
            raise ValueError(f"interval must be positive and batch >= 1, got {interval}, {batch}")
        self.logger = logger
        self.interval = interval
        self.batch = batch
        self._pending: list[tuple[float, str, dict[str, Any]]] = []
        self._serving = False
        self._arrived = trio.Event()
        self._full = trio.Event()

    def add(self, msg: str, fields: dict[str, Any]) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        if not self._serving:
            self._write(time.time(), msg, fields)
            return
        self._pending.append((time.time(), msg, fields))
        if len(self._pending) == 1:
            self._arrived.set()
        if len(self._pending) >= self.batch:
            self._full.set()

    async def run(self) -> None:
        """Write batches until cancelled, then what is left (the app's shutdown cancels it)."""
        if self._serving:
            raise RuntimeError("AccessLog.run is already running: one writer task per app")
        self._serving = True
        try:
            while True:
                await self._arrived.wait()
                with trio.move_on_after(self.interval):
                    await self._full.wait()
                self.flush()
        finally:
            self._serving = False
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._arrived, self._full = trio.Event(), trio.Event()
        for created, msg, fields in pending:
            self._write(created, msg, fields)

    def _write(self, created: float, msg: str, fields: dict[str, Any]) -> None:
        record = self.logger.makeRecord(self.logger.name, logging.INFO, "(access log)", 0, msg, (), None,
                                        extra={"fields": fields})
        record.created, record.msecs = created, (created - int(created)) * 1000
        self.logger.handle(record)


__all__ = ["AccessLog", "JsonFormatter", "configure_logging", "rfc3339_millis", "server_time"]
