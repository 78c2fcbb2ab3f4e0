"""Progress of a long transfer (backup, restore): bytes, rate and ETA.

``progress_report`` is the pure arithmetic; ``Progress`` the shell that reads trio's clock and shows it — one
line rewritten in place on a terminal, a JSON log line (``vigil.backup``) every ``interval`` otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import TextIO

import trio

log = logging.getLogger("vigil.backup")


@dataclass(frozen=True, slots=True)
class ProgressReport:
    done: int  # bytes
    total: int | None  # None: not known in advance (pg_dump's output)
    elapsed: float  # seconds
    rate: float  # bytes per second (0 before any time has passed)
    eta: float | None  # seconds left, when the total is known and the rate is positive


def progress_report(done: int, total: int | None, elapsed: float) -> ProgressReport:
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = None
    if total is not None and rate > 0:
        eta = max(0.0, (total - done) / rate)
    return ProgressReport(done, total, elapsed, rate, eta)


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def render(verb: str, r: ProgressReport) -> str:
    size = _mb(r.done) if r.total is None else f"{_mb(r.done)} / {_mb(r.total)}"
    eta = "ETA --" if r.eta is None else f"ETA {r.eta:,.0f} s"
    return f"{verb}: {size}  {r.rate / 1e6:,.1f} MB/s  {eta}  ({r.elapsed:,.1f} s)"


class Progress:
    def __init__(self, verb: str, *, total: int | None = None, stream: TextIO | None = None,
                 terminal: bool = False, interval: float = 1.0) -> None:
        self.verb = verb
        self.total = total
        self.stream = stream
        self.terminal = terminal and stream is not None
        self.interval = interval
        self.done = 0
        self._started: float | None = None
        self._shown = -float("inf")

    def report(self) -> ProgressReport:
        now = trio.current_time()
        if self._started is None:
            self._started = now
        return progress_report(self.done, self.total, now - self._started)

    def advance(self, n: int) -> None:
        if self._started is None:
            self._started = trio.current_time()
        self.done += n
        if trio.current_time() - self._shown >= self.interval:
            self._show(final=False)

    def finish(self) -> ProgressReport:
        return self._show(final=True)

    def _show(self, *, final: bool) -> ProgressReport:
        r = self.report()
        self._shown = trio.current_time()
        if self.terminal and self.stream is not None:
            self.stream.write("\r\x1b[2K" + render(self.verb, r) + ("\n" if final else ""))
            self.stream.flush()
        else:
            log.info(f"{self.verb} {'done' if final else 'progress'}", extra={"fields": {
                "bytes": r.done, "totalBytes": r.total, "bytesPerSecond": round(r.rate),
                "etaSeconds": None if r.eta is None else round(r.eta, 1), "elapsedSeconds": round(r.elapsed, 3)}})
        return r

    async def counted(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """``chunks`` passed through, each one counted."""
        async for chunk in chunks:
            self.advance(len(chunk))
            yield chunk


__all__ = ["Progress", "ProgressReport", "progress_report", "render"]
