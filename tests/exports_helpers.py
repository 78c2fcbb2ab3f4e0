"""What the exports and backup tests share: moto's S3 server in its own process on loopback, a throwaway
PostgreSQL cluster (initdb on a free port), and seeding helpers.

moto runs as a subprocess (``moto_server``), not a thread, so the memory a test measures is the exporter's
alone, not moto's copy of the uploaded parts.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from actors.exports import S3Config
from kernel import RetryPolicy
from storage import SampleIn, Store, SyncEntity
from tests.resilience_helpers import PrivatePostgres, private_postgres

ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret"
FAST_RETRY = RetryPolicy(attempts=5, initial=0.01, cap=0.05)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


@dataclass
class MotoServer:
    endpoint: str
    process: subprocess.Popen[bytes]

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def new_bucket(self, **overrides: Any) -> S3Config:
        """A fresh bucket and the config that points at it."""
        name = f"vigil-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return S3Config(bucket=name, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
                        endpoint_url=self.endpoint, part_size=5 * 1024 * 1024, retry=FAST_RETRY,
                        **overrides)


@contextlib.contextmanager
def moto_server() -> Iterator[MotoServer]:
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process, "moto_server")
        yield MotoServer(f"http://127.0.0.1:{port}", process)
    finally:
        _stop(process, 10)


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def closed_endpoint() -> str:
    """An endpoint where nothing listens: object storage that is down."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass
class ThrowawayPostgres:
    """A cluster of the test's own (``tests.resilience_helpers.private_postgres``) to make fresh databases in."""

    server: PrivatePostgres

    @property
    def port(self) -> int:
        return self.server.port

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"db_{uuid.uuid4().hex[:10]}"
        self.server.query(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL cluster of our own (the shared one is never touched), removed afterwards."""
    with private_postgres() as server:
        yield ThrowawayPostgres(server)


# -- data ---------------------------------------------------------------------------------------------------
BASE = datetime(2026, 11, 1, tzinfo=UTC)


def samples_for(n: int, *, offset: int = 0, source: str = "watch-1") -> list[SampleIn]:
    out = []
    for i in range(offset, offset + n):
        start = BASE + timedelta(seconds=30 * i)
        out.append(SampleIn(source, f"r{i}", "heart_rate", 50.0 + (i % 70) + 0.25, "bpm", start,
                            start + timedelta(seconds=30), {"i": i}))
    return out


async def seed(store: Store, user: str, n: int, *, batch: int = 10_000, entities: int = 3) -> None:
    for first in range(0, n, batch):
        rows = samples_for(min(batch, n - first), offset=first)
        async with store.transaction() as tx:
            await tx.commit(tx.samples.upsert_many(user, rows))
    if entities:
        async with store.transaction() as tx:
            await tx.commit(tx.entities.put_many([
                SyncEntity(user, "journal", f"e{i}", 1, {"text": f"entry {i}"}) for i in range(entities)]))
