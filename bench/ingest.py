"""Ingestion end to end over real HTTP: `run.py serve` against a load generator in another process.

    .venv/bin/python bench/ingest.py [--quick] [--skip-pg] [--profile DIR]

Every figure is measured in this run, next to its reference:

- ``sqlite_samples_per_s`` / ``pg_samples_per_s``: samples/s committed through
  ``POST /v1/health/samples/batch-upsert`` (500-sample cold-lane batches, several keep-alive
  connections, one user each, unique natural keys, realistic mixed metrics and units), from the
  first request sent to the last 200 received. Reference ``*_raw_rows_per_s``: the same samples
  through the Store API directly (``tx.samples.upsert_many``, 500-row batches, one committed
  transaction each, like bench/storage.py's store path), measured in this process while the server
  is idle. SQLite: three pairs of (raw round, end-to-end run) back to back, the pair with the median
  ratio reported (``sqlite_ratio_pairs`` has all three); PostgreSQL: best of two raw rounds, best of
  two end-to-end runs. Target: end to end >= 50% of it.
- ``hot_p50/p99_*_ms``: one client sending 50-sample hot batches sequentially, alone (idle) and while
  several clients flood the cold lane with 500-sample batches (their 429s are retried after
  ``retryAfterMs``); three rounds of (idle, flood), the median of their p99 ratios. Target: p99
  under flood <= 2x idle p99. SQLite server. Cold yields to hot (actors/ingest/_priority.py), so the
  flood's own samples/s drops while the hot client runs.
- ``middleware_overhead_ratio``: mean latency of ``GET /v1/users/me`` (with a token, no I/O) on
  Vigil / the same on a bare QuartTrio app returning the same JSON, on hypercorn with the same
  config (``run.hypercorn_config``), same load generator and concurrency. Target: <= 1.3.

The machine's cores are shared by the server, the load generator(s) and, during the flood, the
flood process: every end-to-end figure includes that contention. Bodies and their payloadHash are
built before the clock starts. PostgreSQL: a fresh database ``vigil_bench_<pid>`` on the admin DSN
(VIGIL_BENCH_PG_ADMIN_DSN, default postgresql://postgres@127.0.0.1:5432/postgres), migrated with
``run.py migrate``, dropped afterwards; unreachable -> a note and null pg figures.
``--profile DIR`` runs each Vigil server under cProfile (main thread only) and prints its top
functions; figures measured that way are slower and only for finding where time goes.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402
import trio_asyncio  # noqa: E402

from bench._ingest_load import make_sample  # noqa: E402
from storage import SampleIn, StoreConfig, open_store  # noqa: E402
from transport import issue_token  # noqa: E402
from transport._settings import DEV_JWT_SECRET  # noqa: E402

perf = time.perf_counter
LOADGEN = str(ROOT / "bench" / "_ingest_load.py")
PY = sys.executable
DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH = 500


# --- helpers -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("VIGIL_") and name not in ("VIGIL_LOG_LEVEL",):
            env.pop(name)  # the bench decides database and port; dev secrets sign the tokens
    env["PYTHONUNBUFFERED"] = "1"
    # One load generator on one IP measures ingestion, not the per-IP/per-user rate limits.
    env["VIGIL_RATE_LIMIT_USER_PER_MIN"] = env["VIGIL_RATE_LIMIT_IP_PER_MIN"] = "0"
    return env


def wait_healthy(port: int, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 30.0) -> None:
    deadline = perf() + timeout
    while perf() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; log:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not healthy after {timeout}s; log:\n{log_path.read_text()[-3000:]}")


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0  # gone meanwhile
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _children(pid: int) -> list[int]:
    """Child processes of every thread of ``pid`` (a child is listed under the thread that started
    it: the decode workers are started from a worker thread, not the main one)."""
    children: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children.extend(int(c) for c in f.read().split())
        except OSError:
            continue  # the thread ended meanwhile
    return children


class CpuMeter:
    """CPU seconds (user + system, all threads) a server process and its living children (the decode
    workers) used; read from /proc. Workers that exit during a measurement are not counted."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def seconds(self) -> float:
        return _cpu_seconds(self.pid) + sum(_cpu_seconds(child) for child in _children(self.pid))

    def measure(self, fn: Any) -> tuple[dict[str, Any], float]:
        before = self.seconds()
        result = fn()
        return result, self.seconds() - before


@contextmanager
def server(cmd: list[str], port: int, log_path: Path, profile: Path | None = None) -> Iterator[CpuMeter]:
    if profile is not None:
        cmd = [PY, "-m", "cProfile", "-o", str(profile), *cmd[1:]]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=server_env(), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        wait_healthy(port, proc, log_path)
        yield CpuMeter(proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def vigil_cmd(port: int, database_url: str) -> list[str]:
    return [PY, str(ROOT / "run.py"), "serve", "--port", str(port), "--database", database_url]


def load(cfg: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    out = subprocess.run([PY, LOADGEN, "load", json.dumps(cfg)], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


class Background:
    """A load generator that builds its bodies, says ``ready``, runs on ``go`` until ``stop``."""

    def __init__(self, cfg: dict[str, Any], *, until_stop: bool = True) -> None:
        self.proc = subprocess.Popen([PY, LOADGEN, "load", json.dumps({**cfg, "hold": True, "until_stop": until_stop})],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"flood generator did not get ready: {line!r}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self, *, signal_stop: bool = True) -> dict[str, Any]:
        """``signal_stop``: tell it to stop now; otherwise wait until it has sent all its requests."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if signal_stop:
            try:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
        rest = self.proc.stdout.read()
        self.proc.wait(timeout=60)
        return dict(json.loads(rest.strip().splitlines()[-1]))


def tokens(prefix: str, n: int) -> list[str]:
    return [issue_token(DEV_JWT_SECRET, f"{prefix}-{i}", ttl_seconds=3600) for i in range(n)]


def med(values: list[Any]) -> Any:
    return sorted(values)[len(values) // 2]


def verdict(ok: bool | None, target: str) -> str:
    return f"{'n/a' if ok is None else 'ok' if ok else 'MISSED'}: {target}"


# --- the Store API reference -----------------------------------------------------------------------
def store_rows(n: int, tag: str) -> list[SampleIn]:
    """The same samples the load generator sends, converted as the lane converts them."""
    from actors.ingest._units import to_canonical

    rows = []
    for i in range(n):
        s = make_sample(tag, i)
        value, unit = to_canonical(s["metric"], float(s["value"]), s["unit"])
        rows.append(SampleIn(s["sourceId"], s["sourceRecordId"], s["metric"], value, unit,
                             datetime.fromisoformat(s["startAt"]), datetime.fromisoformat(s["endAt"]),
                             s["metadata"]))
    return rows


async def store_rate(url: str, config: StoreConfig, rows: list[SampleIn], rounds: int, first: int = 0) -> float:
    """Best-of-``rounds`` rows/s of ``upsert_many`` in 500-row committed transactions (fresh keys each
    round: every round inserts, as the end-to-end run does)."""
    best = float("inf")
    async with open_store(url, config=config) as store:
        for r in range(first, first + rounds):
            user = f"raw-{r}"
            started = perf()
            for i in range(0, len(rows), BATCH):
                async with store.transaction() as tx:
                    await tx.commit(tx.samples.upsert_many(user, rows[i : i + BATCH]))
            best = min(best, perf() - started)
    return len(rows) / best


# --- phases --------------------------------------------------------------------------------------
def throughput(port: int, cpu: CpuMeter, label: str, conns: int, per_conn: int, lane: str,
               runs: int) -> dict[str, Any]:
    """Best of ``runs`` runs (fresh keys each), each after one untimed warm-up batch per connection."""
    results = []
    for run in range(runs):
        res, used = cpu.measure(lambda run=run: load({"port": port, "mode": "upload", "lane": lane, "conns": conns, "batches_per_conn": per_conn,
                    "batch_size": BATCH, "warmup": 1, "tag": f"{label}-tput{run}",
                    "tokens": tokens(f"{label}-tput", conns), "deadline_s": 40.0}))
        res["server_cpu_us_per_sample"] = round(used / (conns * (per_conn + 1) * BATCH) * 1e6, 2)
        expected = conns * per_conn * BATCH
        if res["errors"] or res["inserted"] + res["updated"] + res["rejected"] != expected:
            raise RuntimeError(f"throughput run incomplete: {res}")
        results.append(res)
    best: dict[str, Any] = max(results, key=lambda r: r["samples_per_s"])
    best["runs_samples_per_s"] = [r["samples_per_s"] for r in results]
    return best


def report_throughput(out: dict[str, Any], backend: str, tput: dict[str, Any], raw: float, conns: int) -> None:
    """Record and print one backend's end-to-end rate beside its raw Store rate."""
    ratio = out[f"{backend}_ratio"] = round(tput["samples_per_s"] / raw, 3)
    out[f"{backend}_samples_per_s"] = tput["samples_per_s"]
    out[f"{backend}_request_p50_ms"], out[f"{backend}_request_p99_ms"] = tput["p50_ms"], tput["p99_ms"]
    out[f"{backend}_statuses"] = tput["statuses"]
    out[f"{backend}_server_cpu_us_per_sample"] = tput["server_cpu_us_per_sample"]
    name = {"sqlite": "sqlite", "pg": "postgres"}[backend]
    print(f"{name:<9} end-to-end {tput['samples_per_s']:>10,.0f} samples/s   Store upsert_many {raw:>10,.0f} rows/s   "
          f"ratio {ratio:.2f}  [{verdict(ratio >= 0.5, '>= 0.50')}]  ({tput['inserted']:,} inserted by {conns} conns, "
          f"runs {tput['runs_samples_per_s']}, request p50 {tput['p50_ms']} ms p99 {tput['p99_ms']} ms, "
          f"statuses {tput['statuses']}, server CPU incl. decode workers {tput['server_cpu_us_per_sample']} us/sample)", flush=True)


def hot_config(port: int, tag: str, requests: int, deadline: float) -> dict[str, Any]:
    return {"port": port, "mode": "upload", "lane": "hot", "conns": 1, "batches_per_conn": requests,
            "batch_size": 50, "warmup": 10, "tag": tag, "tokens": tokens("hot-user", 1), "deadline_s": deadline}


def get_load(port: int, cpu: CpuMeter, conns: int, per_conn: int, warmup: int,
             path: str = "/v1/users/me") -> dict[str, Any]:
    res, used = cpu.measure(lambda: load({"port": port, "mode": "get", "path": path,
                                          "conns": conns, "requests_per_conn": per_conn, "warmup": warmup,
                                          "tokens": tokens("mw-user", 1), "deadline_s": 30.0}))
    res["server_cpu_us_per_request"] = round(used / (conns * (per_conn + warmup)) * 1e6, 1)
    return res


def show_profile(path: Path, top: int = 28) -> None:
    import pstats

    if not path.exists():
        print(f"  (no profile written at {path})")
        return
    print(f"--- cProfile of the server (main thread), top {top} by cumulative then own time: {path}")
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


async def pg_admin(admin_dsn: str, sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async with trio_asyncio.open_loop():
        await trio_asyncio.aio_as_trio(run)()


def db_url(admin_dsn: str, name: str) -> str:
    head, _, _ = admin_dsn.rpartition("/")
    return f"{head}/{name}"


# --- driver --------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--conns", type=int, default=4, help="throughput connections (default 4)")
    parser.add_argument("--lane", default="cold", choices=("hot", "cold", "change"),
                        help="lane of the throughput phase (default cold: bulk backfill)")
    parser.add_argument("--flood-conns", type=int, default=40,
                        help="cold-flood connections (default 40: more than the cold lane's 32-request mailbox, "
                             "so it fills and answers 429)")
    parser.add_argument("--profile", type=Path, help="run Vigil servers under cProfile, profiles in DIR")
    args = parser.parse_args()
    q = args.quick
    began = perf()
    out: dict[str, Any] = {"loadavg_1m_start": round(os.getloadavg()[0], 2), "cores": os.cpu_count(), "batch": BATCH, "throughput_conns": args.conns,
                           "throughput_lane": args.lane, "flood_conns": args.flood_conns}
    per_conn = 8 if q else 25  # x conns x 500 samples, per run
    tput_runs = 1 if q else 2
    raw_n = 20_000 if q else 60_000
    rounds = 1 if q else 2  # PostgreSQL's raw rate: best of
    sqlite_pairs = 1 if q else 3
    hot_n = 60 if q else 300
    get_n = 200 if q else 500  # per connection
    mw_rounds = 1 if q else 5
    flood_per_conn = -(-(200 if q else 800) // args.flood_conns)  # 800 bodies in all (429s resend the same)
    hot_flood_deadline = 2.5 if q else 5.0  # the flood must outlast it (checked: flood_outlasted_hot)
    hot_rounds = 1 if q else 3
    print(f"vigil ingest bench: python {sys.version.split()[0]}, {os.cpu_count()} cores shared by the server and "
          f"the load generator(s); {BATCH}-sample batches; all load on 127.0.0.1", flush=True)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        print(f"PROFILING with cProfile into {args.profile}: figures are NOT representative", flush=True)
    rows = store_rows(raw_n, "raw")

    with tempfile.TemporaryDirectory(prefix="vigil-ingest-bench-") as tmp_name:
        tmp = Path(tmp_name)

        # -- SQLite ----------------------------------------------------------------------------
        port = free_port()
        prof = args.profile / "vigil-sqlite.prof" if args.profile else None
        with server(vigil_cmd(port, f"sqlite:///{tmp / 'vigil.db'}"), port, tmp / "sqlite.log", prof) as cpu:
            # Pairs of (raw Store rate, end-to-end run) back to back, the median pair's ratio: a shared
            # VM's speed drifts by tens of percent within minutes, so each figure is set beside the
            # reference measured next to it, not minutes apart.
            pairs = []
            for pair in range(sqlite_pairs):
                raw_pair = trio.run(store_rate, f"sqlite:///{tmp / 'raw.db'}", StoreConfig(), rows, 1, pair)
                tput_pair = throughput(port, cpu, f"sq{pair}", args.conns, per_conn, args.lane, 1)
                pairs.append((tput_pair["samples_per_s"] / raw_pair, raw_pair, tput_pair))
            pairs.sort(key=lambda p: p[0])
            _, raw, tput = pairs[len(pairs) // 2]
            tput["runs_samples_per_s"] = [p[2]["samples_per_s"] for p in pairs]
            out["sqlite_raw_rows_per_s"] = round(raw)
            out["sqlite_ratio_pairs"] = [round(p[0], 3) for p in pairs]
            out["sqlite_raw_pairs"] = [round(p[1]) for p in pairs]
            report_throughput(out, "sqlite", tput, raw, args.conns)
            print(f"          pairs (ratio, raw rows/s, end-to-end samples/s), median taken: "
                  f"{[(round(r, 2), round(w), t['samples_per_s']) for r, w, t in pairs]}", flush=True)

            # Hot latency: the flood builds its bodies first, so the idle run has the cores to itself.
            # The hot client under flood also builds its bodies before the flood starts. Rounds of
            # (idle, flood) and the median of their ratios: one stall of a shared VM's cores in one run
            # would otherwise decide the figure.
            idles, busies, floods, ratios = [], [], [], []
            for r in range(hot_rounds):
                flood = Background({"port": port, "mode": "upload", "lane": "cold", "conns": args.flood_conns,
                                    "batches_per_conn": flood_per_conn, "batch_size": BATCH, "tag": f"flood{r}",
                                    "tokens": tokens(f"flood{r}", args.flood_conns), "deadline_s": 60.0})
                idle = load(hot_config(port, f"hot-idle{r}", hot_n, 30.0))
                hot = Background(hot_config(port, f"hot-flood{r}", hot_n, hot_flood_deadline), until_stop=False)
                flood.go()
                time.sleep(1.0)  # let the flood fill the cold lane
                hot.go()
                busy = hot.stop(signal_stop=False)
                flooded = flood.stop()
                idles.append(idle)
                busies.append(busy)
                floods.append(flooded)
                ratios.append(busy["p99_ms"] / idle["p99_ms"])
                print(f"hot lane  round {r + 1}: idle p50 {idle['p50_ms']:.2f} p99 {idle['p99_ms']:.2f} ms; flood p50 "
                      f"{busy['p50_ms']:.2f} p99 {busy['p99_ms']:.2f} ms ({busy['latency_n']} batches, slowest "
                      f"{busy['slowest_ms']}); p99 ratio {ratios[-1]:.2f}; cold flood {flooded['samples_per_s']:,.0f} "
                      f"samples/s, {flooded['retries_429']} 429s, outlasted the hot run: {flooded['stopped_early']}",
                      flush=True)
            out["hot_p50_idle_ms"] = med([i["p50_ms"] for i in idles])
            out["hot_p99_idle_ms"] = med([i["p99_ms"] for i in idles])
            out["hot_p50_flood_ms"] = med([b["p50_ms"] for b in busies])
            out["hot_p99_flood_ms"] = med([b["p99_ms"] for b in busies])
            out["hot_requests_idle"] = sum(i["latency_n"] for i in idles)
            out["hot_requests_flood"] = sum(b["latency_n"] for b in busies)
            out["hot_p99_flood_ratio"] = round(med(ratios), 3)
            out["hot_p99_flood_ratio_rounds"] = [round(x, 3) for x in ratios]
            out["hot_p50_flood_ratio"] = round(med([b["p50_ms"] / i["p50_ms"] for i, b in zip(idles, busies,
                                                                                               strict=True)]), 3)
            out["flood_samples_per_s"] = med([f["samples_per_s"] for f in floods])
            out["flood_429s"] = sum(f["retries_429"] for f in floods)
            out["flood_outlasted_hot"] = all(f["stopped_early"] for f in floods)
            print(f"hot lane  idle  p50 {out['hot_p50_idle_ms']:>8.2f} ms  p99 {out['hot_p99_idle_ms']:>8.2f} ms  "
                  f"(medians of {hot_rounds} rounds of {hot_n} sequential 50-sample batches)", flush=True)
            print(f"hot lane  flood p50 {out['hot_p50_flood_ms']:>8.2f} ms  p99 {out['hot_p99_flood_ms']:>8.2f} ms  "
                  f"(p99 ratio, median of rounds {out['hot_p99_flood_ratio']:.2f} "
                  f"[{verdict(out['hot_p99_flood_ratio'] <= 2.0, '<= 2.0')}] rounds {out['hot_p99_flood_ratio_rounds']}; "
                  f"p50 ratio {out['hot_p50_flood_ratio']:.2f}; cold flood {args.flood_conns} conns, "
                  f"{out['flood_samples_per_s']:,.0f} samples/s)", flush=True)

            # Middleware: both servers up, runs interleaved (Vigil, bare, Vigil, ...), median of rounds.
            # Also GET /openapi.json (no auth, no I/O: a precomputed body) against the same bytes
            # from the bare app: the per-request hooks alone (request id, metrics, access log).
            bare_port = free_port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=5) as resp:
                (tmp / "openapi.json").write_bytes(resp.read())
            with server([PY, LOADGEN, "bare", "--port", str(bare_port), "--openapi", str(tmp / "openapi.json")],
                        bare_port, tmp / "bare.log") as bare_cpu:
                rounds_v, rounds_b, doc_v, doc_b = [], [], [], []
                for _ in range(mw_rounds):
                    rounds_v.append(get_load(port, cpu, 4, get_n, 50))
                    rounds_b.append(get_load(bare_port, bare_cpu, 4, get_n, 50))
                    doc_v.append(get_load(port, cpu, 4, get_n // 2, 20, "/openapi.json"))
                    doc_b.append(get_load(bare_port, bare_cpu, 4, get_n // 2, 20, "/openapi.json"))
                vigil_seq = get_load(port, cpu, 1, get_n, 50)
                bare_seq = get_load(bare_port, bare_cpu, 1, get_n, 50)
                # For scale, not the target: a route that also asks an actor and reads the store.
                settings_v = get_load(port, cpu, 4, get_n, 50, "/v1/users/me/settings")
                settings_b = get_load(bare_port, bare_cpu, 4, get_n, 50, "/v1/users/me/settings")
        if prof:
            show_profile(prof)
        ratios = sorted(v["mean_ms"] / b["mean_ms"] for v, b in zip(rounds_v, rounds_b, strict=True))
        out["middleware_overhead_ratio"] = round(med(ratios), 3)
        out["middleware_overhead_ratio_rounds"] = [round(r, 3) for r in ratios]
        out["middleware_overhead_ratio_sequential"] = round(vigil_seq["mean_ms"] / bare_seq["mean_ms"], 3)
        out["settings_get_per_s"] = med([v["requests_per_s"] for v in rounds_v])
        out["bare_get_per_s"] = med([b["requests_per_s"] for b in rounds_b])
        out["settings_get_mean_ms"] = med([v["mean_ms"] for v in rounds_v])
        out["bare_get_mean_ms"] = med([b["mean_ms"] for b in rounds_b])
        out["settings_get_p99_ms"] = med([v["p99_ms"] for v in rounds_v])
        out["bare_get_p99_ms"] = med([b["p99_ms"] for b in rounds_b])
        out["settings_get_seq_mean_ms"], out["bare_get_seq_mean_ms"] = vigil_seq["mean_ms"], bare_seq["mean_ms"]
        out["settings_get_server_cpu_us"] = med([v["server_cpu_us_per_request"] for v in rounds_v])
        out["bare_get_server_cpu_us"] = med([b["server_cpu_us_per_request"] for b in rounds_b])
        out["middleware_cpu_ratio"] = round(out["settings_get_server_cpu_us"] / out["bare_get_server_cpu_us"], 3)
        out["openapi_overhead_ratio"] = round(med([v["mean_ms"] / b["mean_ms"] for v, b in zip(doc_v, doc_b,
                                                                                             strict=True)]), 3)
        out["openapi_vigil_cpu_us"] = med([v["server_cpu_us_per_request"] for v in doc_v])
        out["openapi_bare_cpu_us"] = med([b["server_cpu_us_per_request"] for b in doc_b])
        out["openapi_cpu_ratio"] = round(out["openapi_vigil_cpu_us"] / out["openapi_bare_cpu_us"], 3)
        out["settings_route_ratio"] = round(settings_v["mean_ms"] / settings_b["mean_ms"], 3)
        print(f"GET /v1/users/me (auth, no I/O), 4 conns, median of {mw_rounds} interleaved rounds: Vigil "
              f"{out['settings_get_per_s']:>7,.0f} req/s mean {out['settings_get_mean_ms']:.3f} ms   bare QuartTrio "
              f"{out['bare_get_per_s']:>7,.0f} req/s mean {out['bare_get_mean_ms']:.3f} ms   ratio "
              f"{out['middleware_overhead_ratio']:.2f} [{verdict(out['middleware_overhead_ratio'] <= 1.3, '<= 1.3')}] "
              f"(rounds {out['middleware_overhead_ratio_rounds']})", flush=True)
        print(f"          1 conn (sequential): Vigil mean {vigil_seq['mean_ms']:.3f} ms  bare mean "
              f"{bare_seq['mean_ms']:.3f} ms  ratio {out['middleware_overhead_ratio_sequential']:.2f};  server CPU "
              f"per request (4 conns): Vigil {out['settings_get_server_cpu_us']:.0f} us  bare "
              f"{out['bare_get_server_cpu_us']:.0f} us  ratio {out['middleware_cpu_ratio']:.2f}", flush=True)
        print(f"          GET /v1/users/me/settings (+ actor ask + store read): ratio {out['settings_route_ratio']:.2f} "
              f"(Vigil mean {settings_v['mean_ms']:.3f} ms, bare {settings_b['mean_ms']:.3f} ms; for scale)", flush=True)
        print(f"          GET /openapi.json (no auth, no I/O, same bytes): latency ratio "
              f"{out['openapi_overhead_ratio']:.2f}, server CPU per request Vigil {out['openapi_vigil_cpu_us']:.0f} us "
              f"bare {out['openapi_bare_cpu_us']:.0f} us ratio {out['openapi_cpu_ratio']:.2f}", flush=True)

        # -- PostgreSQL ------------------------------------------------------------------------
        for key in ("pg_samples_per_s", "pg_raw_rows_per_s", "pg_ratio", "pg_request_p50_ms", "pg_request_p99_ms"):
            out[key] = None
        if not args.skip_pg:
            admin = os.environ.get("VIGIL_BENCH_PG_ADMIN_DSN", DEFAULT_PG_ADMIN)
            name = f"vigil_bench_{os.getpid()}"
            url = db_url(admin, name)
            try:
                trio.run(pg_admin, admin, f'CREATE DATABASE "{name}"')
            except Exception as exc:  # unreachable, refused, no permission: say so, report nulls
                while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                    exc = exc.exceptions[0]
                out["pg_note"] = f"PostgreSQL unreachable at {admin}: {type(exc).__name__}: {exc}"
                print(f"NOTE: {out['pg_note']}; pg figures are null", flush=True)
            else:
                try:
                    migrated = subprocess.run([PY, str(ROOT / "run.py"), "migrate", "--database", url], cwd=ROOT,
                                              env=server_env(), capture_output=True, text=True, timeout=60)
                    if migrated.returncode != 0:
                        raise RuntimeError(f"run.py migrate failed: {migrated.stderr[-2000:]}")

                    async def pg_raw() -> float:
                        async with trio_asyncio.open_loop():
                            return await store_rate(url, StoreConfig(pg_schema="bench_raw"), rows, rounds)

                    pg_raw_rate = trio.run(pg_raw)
                    out["pg_raw_rows_per_s"] = round(pg_raw_rate)
                    port = free_port()
                    prof = args.profile / "vigil-pg.prof" if args.profile else None
                    with server(vigil_cmd(port, url), port, tmp / "pg.log", prof) as cpu:
                        tput = throughput(port, cpu, "pg", args.conns, per_conn, args.lane, tput_runs)
                    if prof:
                        show_profile(prof)
                    report_throughput(out, "pg", tput, pg_raw_rate, args.conns)
                finally:
                    trio.run(pg_admin, admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    out["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    out["bench_seconds"] = round(perf() - began, 1)
    out["note"] = (f"{os.cpu_count()} cores shared by the server process (one trio thread + the SQLite writer "
                   "thread), the load generator and, during the flood, the flood generator; "
                   "end-to-end figures include that contention")
    print(f"total {out['bench_seconds']:.1f} s; 1-minute load average {out['loadavg_1m_start']} at the start, "
          f"{out['loadavg_1m_end']} at the end (above ~1 means something else was using the cores too)", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
