"""Edge benchmarks: what the rate limits and the gzip cap cost, next to a limit measured in the same run.

    .venv/bin/python bench/edge.py [--quick]

Figures:
- ``limited_rps`` / ``unlimited_rps``: requests a second through the app (Quart's test client, a user route,
  a real kernel) with the per-IP and per-user limits on the in-process limiter, and with limits off; the ratio
  is what the two limiter hits per request cost (target >= 0.90). Best of several interleaved rounds.
- ``redis_hit_us``: one sliding-window hit on the Redis at VIGIL_BENCH_REDIS_URL (default the local one), next
  to ``local_hit_us`` on the in-process limiter; null when Redis is unreachable.
- ``bomb_reject_ms``: refusing a gzip bomb (256 MiB of zeros, ~250 KB compressed) at a 5 MiB limit, next to
  ``inflate_5mib_ms``, inflating a legitimate 5 MiB body: the bomb costs no more than the largest body allowed.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel import ActorSystem, Supervisor  # noqa: E402
from storage.coordination import CoordinationConfig, CoordinationError, RateLimiter, open_coordination  # noqa: E402
from transport import ApiBlueprint, PayloadTooLarge, Settings, create_app, issue_token  # noqa: E402
from transport._routes import inflate_gzip  # noqa: E402

perf = time.perf_counter
SECRET = "bench-edge-jwt-secret-" + "0123456789abcdef" * 3
LIMIT = 5 * 1024 * 1024


def blueprint() -> ApiBlueprint:
    api = ApiBlueprint("bench", url_prefix="/v1/bench")

    @api.get("/ping", summary="A user route that does nothing")
    async def ping(*, user_id: str) -> Any:
        return {"user": user_id}

    return api


async def requests_per_second(limiter: RateLimiter | None, count: int) -> float:
    settings = Settings(jwt_secret=SECRET, rate_limit_user_per_min=10**9, rate_limit_ip_per_min=10**9)
    async with ActorSystem.start(Supervisor("root", children=[])) as system:
        app = create_app(settings, system=system, blueprints=[blueprint()], rate_limiter=limiter)
        client = app.test_client()
        hdrs = {"Authorization": f"Bearer {issue_token(SECRET, 'bench-user')}"}
        began = perf()
        for _ in range(count):
            response = await client.get("/v1/bench/ping", headers=hdrs)
            assert response.status_code == 200
        return count / (perf() - began)


async def hit_us(limiter: RateLimiter, count: int) -> float:
    began = perf()
    for i in range(count):
        await limiter.hit(f"bench:{i % 100}", limit=10**9, window=60.0)
    return (perf() - began) / count * 1e6


def bomb_figures(rounds: int) -> tuple[float, float]:
    bomb = gzip.compress(b"\0" * (256 * 1024 * 1024), compresslevel=9)
    legit = gzip.compress(os.urandom(LIMIT // 2) + b"\0" * (LIMIT // 2))
    reject, inflate = [], []
    for _ in range(rounds):
        began = perf()
        try:
            inflate_gzip(bomb, LIMIT)
            raise AssertionError("the bomb was not refused")
        except PayloadTooLarge:
            reject.append(perf() - began)
        began = perf()
        zlib.decompress(legit, wbits=16 + zlib.MAX_WBITS)
        inflate.append(perf() - began)
    return min(reject) * 1000, min(inflate) * 1000


async def main_async(quick: bool) -> dict[str, Any]:
    n, rounds = (300, 2) if quick else (2000, 4)
    out: dict[str, Any] = {}
    async with open_coordination(None, config=CoordinationConfig()) as local:
        limited, unlimited = [], []
        for _ in range(rounds):  # interleaved, best of each: other load on the machine hits both alike
            unlimited.append(await requests_per_second(None, n))
            limited.append(await requests_per_second(local.limiter, n))
        out["unlimited_rps"], out["limited_rps"] = max(unlimited), max(limited)
        out["limited_ratio"] = out["limited_rps"] / out["unlimited_rps"]
        out["local_hit_us"] = min([await hit_us(local.limiter, n) for _ in range(rounds)])
    url = os.environ.get("VIGIL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        async with trio_asyncio.open_loop(), open_coordination(url, config=CoordinationConfig()) as redis:
            out["redis_hit_us"] = min([await hit_us(redis.limiter, n // 4) for _ in range(rounds)])
    except CoordinationError as exc:
        print(f"redis at {url} unreachable ({exc}): redis_hit_us not measured", flush=True)
        out["redis_hit_us"] = None
    out["bomb_reject_ms"], out["inflate_5mib_ms"] = bomb_figures(rounds)
    out["bomb_ratio"] = out["bomb_reject_ms"] / out["inflate_5mib_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds (a smoke run)")
    args = parser.parse_args()
    out = trio.run(main_async, args.quick)
    print(f"requests/s, limits on (in-process)  {out['limited_rps']:>10,.0f}   limits off {out['unlimited_rps']:>10,.0f}"
          f"   ratio {out['limited_ratio']:.3f} [target >= 0.90: {'ok' if out['limited_ratio'] >= 0.9 else 'MISSED'}]")
    redis_hit = out["redis_hit_us"]
    print(f"one limiter hit                      {out['local_hit_us']:>10,.1f} us in-process   "
          f"{'n/a' if redis_hit is None else format(redis_hit, ',.1f') + ' us Redis'}")
    print(f"gzip bomb (256 MiB) refused at 5 MiB {out['bomb_reject_ms']:>10,.1f} ms   inflating a 5 MiB body "
          f"{out['inflate_5mib_ms']:,.1f} ms   ratio {out['bomb_ratio']:.2f} [target <= 1.5: "
          f"{'ok' if out['bomb_ratio'] <= 1.5 else 'MISSED'}]", flush=True)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
