"""The single binary (issue 15): ``deploy/build_binary.py`` builds ``dist/vigil`` (or finds it current), and the
file, copied alone into an empty folder and run with an environment stripped of the venv, is the whole
service: its commands, HTTP, uploads on every lane (the cold lane decoded in its worker processes, which are
the binary started again), the read side in the user's time zone from the time zones it carries, a clean
exit 0 on SIGTERM (to its pid, and to its whole process group), and the data there again on the next start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.ingest_helpers import OPS_TOKEN, SECRET, free_port, sample, signed

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 480.0  # a clean build takes about a minute on an idle core
START_DEADLINE = 60.0  # the first start unpacks ~20 MiB and spawns the decode workers
EXIT_DEADLINE = 30.0
BATCH = "/v1/health/samples/batch-upsert"
ROLLUPS = "/v1/health/rollups/daily"


@pytest.fixture(scope="module")
def binary() -> Path:
    """``dist/vigil``, built unless build/vigil.key says it was built from these very sources."""
    result = subprocess.run([sys.executable, str(REPO / "deploy" / "build_binary.py"), "--quiet"], cwd=REPO,
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    path = Path(report["binary"])
    assert path == REPO / "dist" / "vigil" and path.stat().st_size == report["bytes"]
    return path


@dataclass(frozen=True, slots=True)
class Install:
    """The binary alone in a folder, and the bare environment it runs in."""

    exe: Path
    env: dict[str, str]
    tmp: Path  # the bootloader unpacks itself here (TMPDIR)

    @property
    def home(self) -> Path:
        return self.exe.parent

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.exe), *args], cwd=self.home, env=self.env, capture_output=True, text=True,
                              timeout=60)


def bare_env(tmp: Path, port: int) -> dict[str, str]:
    """No venv: PATH without it, no PYTHONPATH/PYTHONHOME/VIRTUAL_ENV, no VIGIL_* but what the test sets. The
    system's time zones hidden (PYTHONTZPATH empty): the binary's own must do."""
    venv_bin = Path(sys.executable).parent
    path = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
            if p and ".venv" not in p and Path(p) != venv_bin]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VIGIL_", "PYTHON", "VIRTUAL_ENV", "CONDA", "PIP_"))}
    env.update(PATH=os.pathsep.join(path), TMPDIR=str(tmp), PYTHONTZPATH="", VIGIL_JWT_SECRET=SECRET,
               VIGIL_OPS_TOKEN=OPS_TOKEN, VIGIL_PORT=str(port), VIGIL_DECODE_PROCESSES="2")
    assert not any(".venv" in v for k, v in env.items() if k in ("PATH", "PYTHONPATH", "VIRTUAL_ENV"))
    return env


@pytest.fixture
def install(binary: Path, tmp_path: Path) -> Install:
    home = tmp_path / "app"
    home.mkdir()
    shutil.copy2(binary, home / "vigil")
    unpack = tmp_path / "tmp"
    unpack.mkdir()
    assert [p.name for p in home.iterdir()] == ["vigil"]
    return Install(home / "vigil", bare_env(unpack, free_port()), unpack)


# -- the server ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Running:
    process: trio.Process
    client: httpx.AsyncClient
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def stop(self, *, group: bool) -> int:
        """SIGTERM to the bootloader's pid (it forwards it), or to the whole process group (systemd's way:
        every process gets it, the server twice)."""
        if group:
            os.killpg(self.process.pid, signal.SIGTERM)
        else:
            self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(EXIT_DEADLINE):
            return await self.process.wait()
        pytest.fail(f"the binary did not exit within {EXIT_DEADLINE} s of SIGTERM; log:\n{self.log_text()}")


@asynccontextmanager
async def serving(install: Install, log_name: str) -> AsyncIterator[Running]:
    """``vigil`` with no arguments (serve on SQLite in ./data), in a session of its own."""
    log_path = install.home.parent / log_name
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process([str(install.exe)], cwd=install.home, env=install.env,
                                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{install.env['VIGIL_PORT']}",
                                     timeout=30) as client:
            running = Running(process, client, log_path)
            await _until_healthy(running)
            yield running
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def _until_healthy(running: Running) -> None:
    with trio.move_on_after(START_DEADLINE):
        while running.process.returncode is None:
            try:
                if (await running.client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)
    pytest.fail(f"the binary is not healthy (exit code {running.process.returncode}); log:\n{running.log_text()}")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children are listed under the thread that started them)."""
    found: list[int] = []
    for tid in _listdir(f"/proc/{pid}/task"):
        try:
            children = [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def exe_of(pid: int) -> Path:
    return Path(f"/proc/{pid}/exe").resolve()


async def all_gone(pids: list[int], deadline: float = 10.0) -> bool:
    """Whether every process ended (multiprocessing's resource tracker ends once it reads EOF, just after)."""
    for _ in range(int(deadline / 0.05)):
        if not any(alive(p) for p in pids):
            return True
        await trio.sleep(0.05)
    return False


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- what the test sends -------------------------------------------------------------------------------------
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Europe/Berlin is UTC+1 in November: 23:30Z on the 24th is the 25th there.
HOT = [sample("h1", value=60.0, start="2026-11-24T23:30:00Z"), sample("h2", value=80.0, start="2026-11-24T12:00:00Z"),
       sample("s1", metric="steps", value=1200, unit="count", start="2026-11-24T12:00:00Z",
              end="2026-11-24T12:30:00Z")]
COLD = [sample(f"c{i}", value=50.0 + i % 100, start=f"2026-11-20T{8 + i // 60:02d}:{i % 60:02d}:00Z") for i in range(300)]
EXPECTED_DAYS = {"2026-11-20": (300, 50.0, 149.0), "2026-11-24": (1, 80.0, 80.0), "2026-11-25": (1, 60.0, 60.0)}


async def fresh_rollups(client: httpx.AsyncClient, token: str) -> dict[str, tuple[int, float, float]]:
    """The heart-rate rollups once the read side caught up with every upload."""
    body: Any = None
    with trio.move_on_after(30):
        while True:
            r = await client.get(ROLLUPS, headers=auth(token),
                                 params={"metric": "heart_rate", "from": "2026-11-18", "to": "2026-11-27"})
            assert r.status_code == 200, r.text
            body = r.json()
            if body["freshness"]["status"] == "fresh" and body["freshness"]["watermark"] > 0:
                return {i["date"]: (i["count"], i["min"], i["max"]) for i in body["items"]}
            await trio.sleep(0.1)
    pytest.fail(f"rollups never became fresh: {body}")


async def heart_rate_samples(client: httpx.AsyncClient, token: str) -> list[float]:
    values: list[float] = []
    cursor: str | None = None
    while True:
        params = {"metric": "heart_rate", "limit": "500", **({"cursor": cursor} if cursor else {})}
        r = await client.get("/v1/health/samples", headers=auth(token), params=params)
        assert r.status_code == 200, r.text
        values += [item["value"] for item in r.json()["items"]]
        cursor = r.json()["nextCursor"]
        if cursor is None:
            return sorted(values)


EXPECTED_VALUES = sorted([60.0, 80.0] + [50.0 + i % 100 for i in range(300)])


# -- the test ------------------------------------------------------------------------------------------------
async def test_the_binary_alone_is_the_whole_service(install: Install) -> None:
    # its commands, as run.py's
    version = install.run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"vigil {metadata.version('vigil')}", version
    minted = install.run("token", "--user", "alice")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    migrated = install.run("migrate", "--database", "sqlite:///./elsewhere.db")
    assert migrated.returncode == 0, migrated.stderr
    versions = [v for (v,) in _query(install.home / "elsewhere.db", "SELECT version FROM schema_migrations")]
    assert versions and sorted(versions) == list(range(1, len(versions) + 1))
    (install.home / "elsewhere.db").unlink()

    async with serving(install, "first.log") as server:
        c = server.client
        r = await c.put("/v1/users/me/settings", headers=auth(token), json={"timezone": "Europe/Berlin"})
        assert r.status_code == 200 and r.json()["timezone"] == "Europe/Berlin", r.text
        r = await c.post(BATCH, headers=auth(token), json=signed(HOT))
        assert r.status_code == 200 and r.json()["inserted"] == 3, r.text
        # the cold lane is decoded in the worker processes: the binary started again by multiprocessing
        workers = [p for p in descendants(server.process.pid) if "--multiprocessing-fork" in cmdline(p)]
        assert len(workers) == 2, [cmdline(p) for p in descendants(server.process.pid)]
        assert all(exe_of(p) == install.exe for p in workers)
        r = await c.post(BATCH, headers=auth(token), json=signed(COLD, lane="cold"))
        assert r.status_code == 200 and r.json()["inserted"] == 300, r.text
        assert await heart_rate_samples(c, token) == EXPECTED_VALUES
        # local days of Europe/Berlin, from the time zones inside the binary (the system's are hidden)
        assert await fresh_rollups(c, token) == EXPECTED_DAYS
        everything = [server.process.pid, *descendants(server.process.pid)]
        assert await server.stop(group=False) == 0, server.log_text()
    assert "stopped" in server.log_text() and "second signal" not in server.log_text()
    assert await all_gone(everything), [cmdline(p) for p in everything if alive(p)]
    assert list(install.tmp.iterdir()) == [], "the bootloader left its unpacked files behind"
    assert (install.home / "data" / "vigil.db").is_file()

    # a second start on the same ./data sees everything; stopped as systemd stops a service
    async with serving(install, "second.log") as server:
        assert await heart_rate_samples(server.client, token) == EXPECTED_VALUES
        assert await fresh_rollups(server.client, token) == EXPECTED_DAYS
        assert await server.stop(group=True) == 0, server.log_text()
    assert "stopped" in server.log_text() and "second signal" not in server.log_text(), server.log_text()
    assert list(install.tmp.iterdir()) == []


def _query(db: Path, sql: str) -> list[Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()
