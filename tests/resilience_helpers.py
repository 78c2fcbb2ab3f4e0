"""A PostgreSQL cluster of a test's own (initdb on a free port), to stop and start again mid-test: the shared
server is never touched. As root, the server runs as the ``postgres`` user (initdb refuses root)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.ingest_helpers import free_port

IN_CI = os.environ.get("CI") == "true"


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


class PrivatePostgres:
    """``start()`` / ``stop()`` (an immediate shutdown: connections drop as in a crash) on one port and
    data directory, as often as a test likes."""

    def __init__(self, bin_dir: Path, directory: Path) -> None:
        self.bin = bin_dir
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.process: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {"user": "postgres"} if os.geteuid() == 0 else {}
        if self._as:
            shutil.chown(directory, "postgres")
        subprocess.run([str(bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                        "-E", "UTF8"], check=True, capture_output=True, **self._as)

    def start(self) -> None:
        log = (self.directory / "log").open("ab")
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.directory),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=60"],
            stdout=log, stderr=log, **self._as)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True)
            if ready.returncode == 0:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"private postgres on port {self.port} did not start: "
                           f"{(self.directory / 'log').read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        """Immediate shutdown (SIGQUIT): every connection is cut, nothing is flushed politely."""
        if self.process is not None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def query(self, sql: str) -> list[str]:
        """Lines of ``psql -At -c sql`` (a look that bypasses the code under test)."""
        psql = str(self.bin / "psql") if (self.bin / "psql").exists() else "psql"
        out = subprocess.run([psql,
                              "-At", "-d", self.dsn, "-c", sql], check=True, capture_output=True, text=True)
        return [line for line in out.stdout.splitlines() if line]


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        message = "!!! no PostgreSQL server binaries under /usr/lib/postgresql - outage tests NOT RUN"
        if IN_CI:
            pytest.fail(message + " [CI=true]")
        pytest.skip(message)
    directory = Path(tempfile.mkdtemp(prefix="vigil-pg-"))
    try:
        server = PrivatePostgres(bin_dir, directory)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
