"""The single binary (dist/vigil) against the same code in the venv (`run.py serve`).

    .venv/bin/python bench/binary.py [--quick]

Builds dist/vigil first unless it is current (deploy/build_binary.py). Every figure is measured in this run,
next to its reference:

- ``binary_start_s`` / ``venv_start_s``: wall time from starting the process to the first ``GET /health``
  200 (polled every 10 ms) of ``dist/vigil serve`` and of ``.venv/bin/python run.py serve`` (its bytecode
  compiled first, as the binary's is), each on a fresh SQLite file with the default decode workers (spawned beside
  the rest of the start-up; the server listens once they are ready); the binary's includes unpacking itself. Rounds alternate the two; the median of each. Target: binary <= 1.5x.
- ``binary_samples_per_s`` / ``venv_samples_per_s``: samples/s committed through
  ``POST /v1/health/samples/batch-upsert`` (500-sample cold-lane batches, decoded in the worker processes,
  several keep-alive connections; bench/ingest.py's load generator and its ``throughput`` phase: best of
  two runs on each server). Rounds alternate the two; the best of each. Target: binary >= 0.95x.
- ``binary_bytes``: the size of dist/vigil.

The machine's cores are shared by the server, the load generator and whatever else runs: every figure
includes that contention. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import PY, CpuMeter, free_port, med, server, server_env, throughput, verdict  # noqa: E402

perf = time.perf_counter
BINARY = ROOT / "dist" / "vigil"


def build() -> dict[str, Any]:
    out = subprocess.run([PY, str(ROOT / "deploy" / "build_binary.py"), "--quiet"], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"building dist/vigil failed:\n{out.stdout}\n{out.stderr}")
    print(out.stdout.strip().splitlines()[-2], flush=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def commands(kind: str, port: int, db: Path) -> list[str]:
    args = ["serve", "--port", str(port), "--database", f"sqlite:///{db}"]
    return [str(BINARY), *args] if kind == "binary" else [PY, str(ROOT / "run.py"), *args]


def start_seconds(kind: str, workdir: Path, round_: int) -> float:
    """Process start to the first /health 200, then SIGTERM and wait for the exit."""
    port = free_port()
    log_path = workdir / f"start-{kind}-{round_}.log"
    with open(log_path, "wb") as log:
        started = perf()
        proc = subprocess.Popen(commands(kind, port, workdir / f"start-{kind}-{round_}.db"), cwd=workdir,
                                env=server_env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        while perf() - started < 120:
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return perf() - started
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{kind} not healthy after 120 s:\n{log_path.read_text()[-3000:]}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def serving(kind: str, workdir: Path, round_: int) -> Iterator[tuple[int, CpuMeter]]:
    port = free_port()
    with server(commands(kind, port, workdir / f"tput-{kind}-{round_}.db"), port,
                workdir / f"tput-{kind}-{round_}.log") as cpu:
        yield port, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller runs (a smoke run)")
    args = parser.parse_args()
    rounds = 2 if args.quick else 3
    conns, per_conn = 4, (6 if args.quick else 20)
    out: dict[str, Any] = {"loadavg_1m_start": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}
    built = build()
    out["binary_build_s"] = built["build_s"]
    # The venv gets its bytecode compiled first, as the binary's is: an environment that sets
    # PYTHONDONTWRITEBYTECODE (this one does) would otherwise compile every module at every start.
    subprocess.run([PY, "-m", "compileall", "-q", "-x", r"[/\\]\.venv[/\\]|[/\\]build[/\\]|[/\\]dist[/\\]", str(ROOT)],
                   cwd=ROOT, check=True, capture_output=True)
    starts: dict[str, list[float]] = {"binary": [], "venv": []}
    rates: dict[str, list[float]] = {"binary": [], "venv": []}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-binary-") as tmp:
        workdir = Path(tmp)
        for r in range(rounds):
            for kind in (("binary", "venv") if r % 2 == 0 else ("venv", "binary")):
                starts[kind].append(round(start_seconds(kind, workdir, r), 3))
        print(f"start to first /health 200: binary {starts['binary']} s, venv {starts['venv']} s", flush=True)
        for r in range(2):
            for kind in (("venv", "binary") if r % 2 == 0 else ("binary", "venv")):
                with serving(kind, workdir, r) as (port, cpu):
                    res = throughput(port, cpu, f"{kind}{r}", conns, per_conn, "cold", runs=2)
                rates[kind] += res["runs_samples_per_s"]
        print(f"cold-lane samples/s (each run): binary {rates['binary']}, venv {rates['venv']}", flush=True)
    binary_start, venv_start = med(starts["binary"]), med(starts["venv"])
    binary_rate, venv_rate = max(rates["binary"]), max(rates["venv"])
    start_ratio = round(binary_start / venv_start, 3)
    rate_ratio = round(binary_rate / venv_rate, 3)
    out.update(binary_start_s=binary_start, venv_start_s=venv_start, start_ratio=start_ratio,
               binary_starts_s=starts["binary"], venv_starts_s=starts["venv"],
               binary_samples_per_s=binary_rate, venv_samples_per_s=venv_rate, samples_ratio=rate_ratio,
               binary_bytes=built["bytes"], loadavg_1m_end=round(os.getloadavg()[0], 2))
    print(f"start   binary {binary_start:.2f} s  venv {venv_start:.2f} s  ratio {start_ratio:.2f}  "
          f"[{verdict(start_ratio <= 1.5, '<= 1.5')}]")
    print(f"ingest  binary {binary_rate:,.0f}  venv {venv_rate:,.0f} samples/s  ratio {rate_ratio:.2f}  "
          f"[{verdict(rate_ratio >= 0.95, '>= 0.95')}]")
    print(f"size    {built['bytes'] / 2**20:.1f} MiB ({built['bytes']:,} bytes)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
