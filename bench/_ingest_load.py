"""Load generator and bare reference server for bench/ingest.py (run as separate processes).

    python bench/_ingest_load.py load '<json config>'     # an HTTP/1.1 client (h11 over trio)
    python bench/_ingest_load.py bare --port P [--openapi FILE]   # a bare Quart-Trio app on hypercorn

The client keeps one keep-alive connection per simulated client. Every request body (with its
``payloadHash``, computed by ``actors.ingest.payload_hash``) is built before the clock starts.
When the config says ``hold``, the client prints ``ready`` once its bodies are built and waits for
``go`` on stdin; with ``until_stop`` it keeps sending until ``stop`` arrives on stdin (or its bodies
or deadline run out). The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import json
import math
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

perf = time.perf_counter
BASE_TIME = datetime(2025, 6, 1, tzinfo=UTC)

# (metric, unit, value generator, sample duration seconds, source) — a phone and a watch, as HealthKit
# would send them; a few alternative units exercise the conversion path.
_KINDS: tuple[tuple[str, str, Any, int, str], ...] = (
    ("heart_rate", "bpm", lambda i: 52.0 + (i * 7) % 90, 0, "apple-watch-7"),
    ("heart_rate", "count/min", lambda i: 60.0 + (i * 3) % 40, 0, "apple-watch-7"),
    ("steps", "count", lambda i: (i * 13) % 180, 60, "iphone-15"),
    ("active_energy", "kcal", lambda i: round(0.5 + (i * 0.37) % 9, 3), 60, "apple-watch-7"),
    ("active_energy", "kJ", lambda i: round(2.0 + (i * 1.3) % 30, 2), 60, "apple-watch-7"),
    ("distance", "m", lambda i: round(1.0 + (i * 3.1) % 120, 2), 60, "iphone-15"),
    ("distance", "km", lambda i: round(0.01 + (i * 0.013) % 0.2, 4), 60, "iphone-15"),
    ("spo2", "%", lambda i: 94.0 + (i % 6), 0, "apple-watch-7"),
    ("hrv_sdnn", "ms", lambda i: round(25.0 + (i * 1.7) % 60, 1), 0, "apple-watch-7"),
    ("sleep_stage", "category", lambda i: i % 6, 30, "apple-watch-7"),
    ("respiratory_rate", "breaths/min", lambda i: 12.0 + (i % 8), 0, "apple-watch-7"),
)
_META: tuple[dict[str, str], ...] = ({}, {"device": "Watch7,1", "motionContext": "sedentary"}, {}, {"timeZone": "Europe/Berlin"})


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_sample(tag: str, n: int) -> dict[str, Any]:
    """The n-th sample of a stream: a unique natural key (sourceRecordId and startAt) per n."""
    metric, unit, value, duration, source = _KINDS[n % len(_KINDS)]
    start = BASE_TIME + timedelta(seconds=7 * n)
    return {
        "sourceId": source,
        "sourceRecordId": f"{tag}-{n:08d}",
        "metric": metric,
        "value": value(n),
        "unit": unit,
        "startAt": iso(start),
        "endAt": iso(start + timedelta(seconds=duration)),
        "metadata": _META[n % len(_META)],
    }


def make_body(tag: str, first: int, size: int, lane: str) -> bytes:
    from actors.ingest import payload_hash

    body: dict[str, Any] = {
        "requestId": str(uuid.uuid4()),
        "lane": lane,
        "samples": [make_sample(tag, n) for n in range(first, first + size)],
    }
    body["payloadHash"] = payload_hash(body)
    return json.dumps(body, separators=(",", ":")).encode()


def _build_stream(spec: tuple[str, int, int, str]) -> list[bytes]:
    tag, count, size, lane = spec
    return [make_body(tag, b * size, size, lane) for b in range(count)]


def build_bodies(specs: list[tuple[str, int, int, str]]) -> list[list[bytes]]:
    """One list of bodies per connection; big jobs use every core (nothing is being timed yet)."""
    if sum(count * size for _, count, size, _ in specs) < 20_000 or len(specs) < 2:
        return [_build_stream(spec) for spec in specs]
    import multiprocessing
    import os

    with multiprocessing.get_context("fork").Pool(min(len(specs), os.cpu_count() or 1)) as pool:
        return pool.map(_build_stream, specs)


# --- the HTTP client ------------------------------------------------------------------------------
@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    retries_429: int = 0
    ok: int = 0
    inserted: int = 0
    updated: int = 0
    rejected: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)


class Connection:
    """One keep-alive HTTP/1.1 connection (h11 over a trio TCP stream, TCP_NODELAY)."""

    def __init__(self, port: int, stats: Stats) -> None:
        self.port = port
        self.stats = stats
        self.stream: Any = None
        self.h11: Any = None

    async def _connect(self) -> None:
        import h11
        import trio

        if self.stream is not None:
            await self.stream.aclose()
            self.stats.reconnects += 1
        self.stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        self.h11 = h11.Connection(h11.CLIENT)

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes = b"") -> tuple[int, bytes]:
        import h11

        if self.h11 is None or self.h11.our_state is not h11.IDLE:
            if self.h11 is not None and self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                self.h11.start_next_cycle()
            else:
                await self._connect()
        conn = self.h11
        all_headers = [("Host", f"127.0.0.1:{self.port}"), *headers]
        if body or method in ("POST", "PUT"):
            all_headers.append(("Content-Length", str(len(body))))
        out = conn.send(h11.Request(method=method, target=target, headers=all_headers))
        if body:
            out += conn.send(h11.Data(data=body))
        out += conn.send(h11.EndOfMessage())
        await self.stream.send_all(out)
        status = 0
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("server closed the connection mid-response")
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:  # the server wants to close (Connection: close): open a new one next time
            self.h11 = None
        return status, b"".join(chunks)

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def summary(stats: Stats, elapsed: float) -> dict[str, Any]:
    lat = stats.latencies

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1e3, 3)

    return {
        "elapsed_s": round(elapsed, 4),
        "requests_ok": stats.ok,
        "requests_per_s": round(stats.ok / elapsed, 2) if elapsed > 0 else None,
        "inserted": stats.inserted,
        "updated": stats.updated,
        "rejected": stats.rejected,
        "samples_per_s": round((stats.inserted + stats.updated) / elapsed, 1) if elapsed > 0 else None,
        "statuses": stats.statuses,
        "retries_429": stats.retries_429,
        "reconnects": stats.reconnects,
        "latency_n": len(lat),
        "p50_ms": ms(percentile(lat, 50)),
        "p90_ms": ms(percentile(lat, 90)),
        "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(max(lat) if lat else None),
        "slowest_ms": [ms(x) for x in sorted(lat)[-5:]],
        "mean_ms": ms(sum(lat) / len(lat) if lat else None),
        "errors": stats.errors[:5],
    }


async def run_load(cfg: dict[str, Any]) -> dict[str, Any]:
    import trio

    port = cfg["port"]
    mode = cfg["mode"]  # "upload" or "get"
    conns = cfg["conns"]
    stats = Stats()
    started_building = perf()
    if mode == "upload":
        size, per_conn, lane = cfg["batch_size"], cfg["batches_per_conn"], cfg["lane"]
        warm = cfg.get("warmup", 0)
        work = build_bodies([(f"{cfg['tag']}-c{c}", per_conn, size, lane) for c in range(conns)])
        warm_work = build_bodies([(f"{cfg['tag']}-w{c}", warm, size, lane) for c in range(conns)])
        target = "/v1/health/samples/batch-upsert"
        method = "POST"
    else:
        work = [[b""] * cfg["requests_per_conn"] for _ in range(conns)]
        warm_work = [[b""] * cfg.get("warmup", 0) for _ in range(conns)]
        target, method = cfg["path"], "GET"
    build_s = perf() - started_building
    tokens = cfg["tokens"]
    headers_of = [[("Authorization", f"Bearer {tokens[c % len(tokens)]}"), *(
        [("Content-Type", "application/json")] if method == "POST" else [])] for c in range(conns)]
    deadline_s = cfg.get("deadline_s", 60.0)
    stop = trio.Event()
    retry_cap = cfg.get("retry_cap_s", 2.0)

    if cfg.get("hold"):
        print("ready", flush=True)
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        if line.strip() != "go":
            return {"aborted": True}

    async def watch_stdin() -> None:
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line or line.strip() == "stop":
                stop.set()
                return

    async def client(index: int, connection: Connection, timed: bool) -> None:
        headers = headers_of[index]
        bodies = work[index] if timed else warm_work[index]
        i = 0
        while i < len(bodies) and not stop.is_set() and perf() < hard_deadline:
            body = bodies[i]
            t0 = perf()
            try:
                status, payload = await connection.request(method, target, headers, body)
            except (OSError, ConnectionError, trio.BrokenResourceError) as exc:
                stats.errors.append(f"{type(exc).__name__}: {exc}")
                connection.h11 = None
                await trio.sleep(0.05)
                continue
            t1 = perf()
            stats.statuses[str(status)] = stats.statuses.get(str(status), 0) + 1
            if status == 429:
                # The lane is full: wait as told and resend the same body (nothing was claimed).
                stats.retries_429 += 1
                try:
                    wait_ms = json.loads(payload)["error"]["retryAfterMs"] or 100
                except (ValueError, KeyError, TypeError):
                    wait_ms = 100
                with trio.move_on_after(min(wait_ms / 1e3, retry_cap)):
                    await stop.wait()
                continue
            if status != 200:
                stats.errors.append(f"{status}: {payload[:300]!r}")
                i += 1
                continue
            if timed:
                stats.latencies.append(t1 - t0)
                stats.ok += 1
                if mode == "upload":
                    result = json.loads(payload)
                    stats.inserted += result["inserted"]
                    stats.updated += result["updated"]
                    stats.rejected += len(result["rejected"])
            i += 1

    connections = [Connection(port, stats) for _ in range(conns)]
    hard_deadline = perf() + deadline_s
    if any(warm_work):
        async with trio.open_nursery() as nursery:
            for c in range(conns):
                nursery.start_soon(client, c, connections[c], False)
        stats.statuses.clear()
        stats.retries_429 = 0
    began = perf()
    async with trio.open_nursery() as nursery:
        if cfg.get("until_stop"):
            nursery.start_soon(watch_stdin)
        async with trio.open_nursery() as clients:
            for c in range(conns):
                clients.start_soon(client, c, connections[c], True)
        elapsed = perf() - began
        nursery.cancel_scope.cancel()
    for connection in connections:
        await connection.aclose()
    out = summary(stats, elapsed)
    out["build_s"] = round(build_s, 3)
    out["stopped_early"] = stop.is_set()
    out["ran_out"] = not stop.is_set() and perf() < hard_deadline  # all bodies sent before any stop
    return out


# --- the bare reference server --------------------------------------------------------------------
def run_bare(port: int, openapi_file: str | None) -> None:
    """A QuartTrio app with routes returning the JSON Vigil's ``/v1/users/me`` and settings return (and, given the file, one returning
    Vigil's OpenAPI document), on hypercorn with the exact config ``run.py serve`` builds
    (``run.hypercorn_config``)."""
    import hypercorn.trio
    import trio
    from quart_trio import QuartTrio

    from run import hypercorn_config
    from transport import Settings

    app = QuartTrio(__name__, static_folder=None)
    body = b'{"allowHealthDataUpload":true,"blockedMetrics":[],"timezone":"UTC"}'

    @app.get("/v1/users/me/settings")
    async def settings() -> Any:
        return app.response_class(body, status=200, content_type="application/json")

    me = b'{"userId":"mw-user-0"}'  # what Vigil answers for the bench's token

    @app.get("/v1/users/me")
    async def whoami() -> Any:
        return app.response_class(me, status=200, content_type="application/json")

    openapi = Path(openapi_file).read_bytes() if openapi_file else b"{}"

    @app.get("/openapi.json")
    async def openapi_json() -> Any:
        return app.response_class(openapi, status=200, content_type="application/json")

    @app.get("/health")
    async def health() -> Any:
        return app.response_class(b'{"status":"healthy"}', status=200, content_type="application/json")

    config = hypercorn_config(Settings(port=port))

    async def main() -> None:
        with trio.open_signal_receiver(15, 2) as signals:
            shutdown = trio.Event()

            async def watch() -> None:
                async for _ in signals:
                    shutdown.set()
                    return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await hypercorn.trio.serve(app, config, shutdown_trigger=shutdown.wait)
                nursery.cancel_scope.cancel()

    trio.run(main)


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "bare":
        run_bare(int(sys.argv[sys.argv.index("--port") + 1]),
                 sys.argv[sys.argv.index("--openapi") + 1] if "--openapi" in sys.argv else None)
        return
    if len(sys.argv) != 3 or sys.argv[1] != "load":
        raise SystemExit(__doc__)
    import trio

    cfg = json.loads(sys.argv[2])
    print(json.dumps(trio.run(run_load, cfg)), flush=True)


if __name__ == "__main__":
    main()
