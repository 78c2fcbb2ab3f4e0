"""Contract suite for storage.coordination, run against the in-process backend (under an
autojumping MockClock) and against a real Redis (VIGIL_TEST_REDIS_URL, real time), plus
Redis-only tests: cross-process delivery, prefix escaping, outage and recovery.

An unreachable Redis skips its tests with a loud reason, except under CI=true where it
fails them.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import cache
from pathlib import Path

import pytest
import redis
import trio
import trio.testing

from storage.coordination import (
    BusConfig,
    Coordination,
    CoordinationClosed,
    CoordinationConfig,
    CoordinationUnavailable,
    Message,
    RedisConfig,
    open_coordination,
)
from storage.coordination._glob import escape_glob, glob_matches
from storage.coordination._redis import RedisBus

REDIS_URL = os.environ.get("VIGIL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI") == "true"
ROOT = Path(__file__).resolve().parents[2]

PeerFactory = Callable[[], AbstractAsyncContextManager[Coordination]]


@cache
def _unreachable_reason(url: str) -> str | None:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1) as client:
            client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def require_redis(url: str = REDIS_URL) -> None:
    reason = _unreachable_reason(url)
    if reason is None:
        return
    message = (
        f"!!! REDIS UNREACHABLE at {url} ({reason}) - Redis contract tests NOT RUN. "
        "Start Redis or set VIGIL_TEST_REDIS_URL."
    )
    if IN_CI:
        pytest.fail(message + " [CI=true: an unreachable Redis is a failure]")
    pytest.skip(message)


def free_port() -> int:
    # Bound then closed: nothing listens there afterwards (a "closed port").
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_config(prefix: str, *, listener_idle_ping: float = 15.0) -> CoordinationConfig:
    return CoordinationConfig(
        redis=RedisConfig(key_prefix=prefix, connect_timeout=0.5, command_timeout=0.5, health_timeout=0.5),
        bus=BusConfig(
            subscribe_timeout=2.0,
            reconnect_backoff_min=0.02,
            reconnect_backoff_max=0.2,
            listener_idle_ping=listener_idle_ping,
        ),
        seed=1234,
    )


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend_clock(backend: str) -> trio.testing.MockClock | None:
    # Memory runs on a MockClock (sleeps are instant and exact); Redis needs real time,
    # since trio-asyncio hands trio's clock to redis-py's socket timeouts.
    return trio.testing.MockClock(autojump_threshold=0) if backend == "memory" else None


@pytest.fixture
def prefix() -> str:
    return f"vigil-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def redis_url(backend: str, prefix: str) -> Iterator[str | None]:
    if backend == "memory":
        yield None
        return
    require_redis()
    yield REDIS_URL
    # Keys carry TTLs anyway; delete them now to leave the test database clean.
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=escape_glob(prefix) + "*", count=500))
        if keys:
            client.delete(*keys)


@pytest.fixture
def config(prefix: str) -> CoordinationConfig:
    return make_config(prefix)


@pytest.fixture
async def coord(redis_url: str | None, config: CoordinationConfig) -> AsyncIterator[Coordination]:
    async with open_coordination(redis_url, config=config) as coordination:
        yield coordination


@pytest.fixture
def open_peer(coord: Coordination, redis_url: str | None, config: CoordinationConfig) -> PeerFactory:
    """Another participant: a second connection set (think: process) with Redis, the
    same object in-process (there is only one process to share state with)."""

    @asynccontextmanager
    async def peer() -> AsyncIterator[Coordination]:
        if redis_url is None:
            yield coord
        else:
            async with open_coordination(redis_url, config=config) as other:
                yield other

    return peer


async def receive(sub: AsyncIterator[Message], seconds: float = 5.0) -> Message:
    with trio.fail_after(seconds):
        return await anext(sub)


async def receive_until(sub: AsyncIterator[Message], stop: bytes) -> list[Message]:
    got = []
    while (message := await receive(sub)).data != stop:
        got.append(message)
    return got


# -- rate limiter ---------------------------------------------------------------------


async def test_rate_limit_allows_exactly_limit_and_tells_retry_after(
    coord: Coordination, backend_clock: object
) -> None:
    window = 0.5
    decisions = [await coord.limiter.hit("login:1.2.3.4", limit=3, window=window) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert [d.retry_after for d in decisions[:3]] == [0.0, 0.0, 0.0]
    denied = decisions[3]
    assert 0 < denied.retry_after <= window
    assert not (await coord.limiter.hit("login:1.2.3.4", limit=3, window=window)).allowed
    await trio.sleep(denied.retry_after + 0.02)
    again = await coord.limiter.hit("login:1.2.3.4", limit=3, window=window)
    assert again.allowed


async def test_rate_limit_reset_is_when_the_oldest_hit_leaves_the_window(
    coord: Coordination, backend_clock: object
) -> None:
    window = 0.5
    first = await coord.limiter.hit("reset:k", limit=2, window=window)
    assert first.allowed and 0.4 < first.reset <= window  # only itself counted: one window from now
    await trio.sleep(0.2)
    second = await coord.limiter.hit("reset:k", limit=2, window=window)
    assert second.allowed and second.remaining == 0
    assert 0.2 <= second.reset <= 0.31  # the first hit leaves about 0.3 s from now
    denied = await coord.limiter.hit("reset:k", limit=2, window=window)
    assert not denied.allowed and denied.reset == denied.retry_after
    await trio.sleep(denied.reset + 0.02)
    assert (await coord.limiter.hit("reset:k", limit=2, window=window)).allowed


async def test_rate_limit_hit_all_counts_all_or_none(coord: Coordination, backend_clock: object) -> None:
    hits = [("all:ip", 3), ("all:user", 1)]
    both = await coord.limiter.hit_all(hits, window=10)
    assert [(d.allowed, d.remaining) for d in both] == [(True, 2), (True, 0)]
    assert all(0 < d.reset <= 10 for d in both)
    denied = await coord.limiter.hit_all(hits, window=10)
    assert [(d.allowed, d.remaining) for d in denied] == [(True, 2), (False, 0)]  # the ip was not counted
    assert 0 < denied[1].retry_after <= 10 and denied[0].retry_after == 0.0
    assert (await coord.limiter.hit("all:ip", limit=3, window=10)).remaining == 1
    for bad in ([], [("k", 1), ("k", 2)], [("k", 0)]):
        with pytest.raises(ValueError):
            await coord.limiter.hit_all(bad, window=10)


async def test_rate_limit_keys_are_independent(coord: Coordination, backend_clock: object) -> None:
    assert (await coord.limiter.hit("a", limit=1, window=10)).allowed
    assert not (await coord.limiter.hit("a", limit=1, window=10)).allowed
    assert (await coord.limiter.hit("b", limit=1, window=10)).allowed


async def test_rate_limit_is_atomic_under_concurrency(
    coord: Coordination, open_peer: PeerFactory, backend_clock: object
) -> None:
    results: list[bool] = []

    async def hammer(participant: Coordination) -> None:
        decision = await participant.limiter.hit("shared", limit=7, window=30)
        results.append(decision.allowed)

    async with open_peer() as peer, trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(hammer, coord if i % 2 else peer)
    assert len(results) == 40
    assert results.count(True) == 7


@pytest.mark.parametrize(
    ("key", "limit", "window"),
    [("", 1, 1.0), ("k", 0, 1.0), ("k", True, 1.0), ("k", 1, 0.0), ("k", 1, float("inf"))],
)
async def test_rate_limit_rejects_bad_arguments(
    coord: Coordination, backend_clock: object, key: str, limit: int, window: float
) -> None:
    with pytest.raises(ValueError):
        await coord.limiter.hit(key, limit=limit, window=window)


# -- leases ---------------------------------------------------------------------------


async def test_lease_only_owner_renews_and_releases(coord: Coordination, backend_clock: object) -> None:
    leases = coord.leases
    assert await leases.acquire("sync:user-1", "worker-a", 10)
    assert not await leases.acquire("sync:user-1", "worker-b", 10)
    assert not await leases.renew("sync:user-1", "worker-b", 10)
    assert not await leases.release("sync:user-1", "worker-b")
    assert await leases.renew("sync:user-1", "worker-a", 10)
    assert await leases.acquire("sync:user-1", "worker-a", 10)  # idempotent for the holder
    assert await leases.release("sync:user-1", "worker-a")
    assert not await leases.release("sync:user-1", "worker-a")
    assert not await leases.renew("sync:user-1", "worker-a", 10)
    assert await leases.acquire("sync:user-1", "worker-b", 10)


async def test_lease_expiry_lets_another_owner_acquire(coord: Coordination, backend_clock: object) -> None:
    leases = coord.leases
    assert await leases.acquire("job", "a", 0.2)
    await trio.sleep(0.3)
    assert await leases.acquire("job", "b", 10)
    assert not await leases.renew("job", "a", 10)
    assert not await leases.release("job", "a")


async def test_lease_renew_pushes_expiry(coord: Coordination, backend_clock: object) -> None:
    leases = coord.leases
    assert await leases.acquire("job", "a", 0.5)
    await trio.sleep(0.3)
    assert await leases.renew("job", "a", 0.5)
    await trio.sleep(0.3)  # 0.6 s after acquire: alive only thanks to the renew
    assert not await leases.acquire("job", "b", 10)
    await trio.sleep(0.3)
    assert await leases.acquire("job", "b", 10)


async def test_concurrent_acquirers_exactly_one_wins(
    coord: Coordination, open_peer: PeerFactory, backend_clock: object
) -> None:
    winners: list[str] = []

    async def contend(participant: Coordination, owner: str) -> None:
        if await participant.leases.acquire("leader", owner, 5):
            winners.append(owner)

    async with open_peer() as peer, trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(contend, coord if i % 2 else peer, f"owner-{i}")
    assert len(winners) == 1


async def test_lease_rejects_bad_arguments(coord: Coordination, backend_clock: object) -> None:
    with pytest.raises(ValueError):
        await coord.leases.acquire("", "a", 1)
    with pytest.raises(ValueError):
        await coord.leases.acquire("n", "", 1)
    with pytest.raises(ValueError):
        await coord.leases.renew("n", "a", 0)
    with pytest.raises(ValueError):
        await coord.leases.release("n", "")


# -- pub/sub --------------------------------------------------------------------------


async def test_pubsub_delivers_bytes_and_str(coord: Coordination, backend_clock: object) -> None:
    async with coord.bus.subscribe("user.42") as sub:
        await coord.bus.publish("user.42", b"\x00binary")
        await coord.bus.publish("user.42", "text é")
        assert await receive(sub) == ("user.42", b"\x00binary")
        channel, data = await receive(sub)
        assert (channel, data) == ("user.42", "text é".encode())


async def test_pubsub_channel_and_pattern_isolation(coord: Coordination, backend_clock: object) -> None:
    bus = coord.bus
    async with (
        bus.subscribe("a", "sync") as on_a,
        bus.subscribe("sync", patterns=["b.*"]) as on_b_star,
        bus.subscribe("b.1", "sync") as on_b1,
        bus.subscribe("sync", patterns=["?"]) as on_single,
    ):
        for channel in ["a", "b.1", "b.2", "c", "ab", "b"]:
            await bus.publish(channel, channel)
        await bus.publish("sync", b"end")
        assert [m.channel for m in await receive_until(on_a, b"end")] == ["a"]
        assert [m.channel for m in await receive_until(on_b_star, b"end")] == ["b.1", "b.2"]
        assert [m.channel for m in await receive_until(on_b1, b"end")] == ["b.1"]
        assert [m.channel for m in await receive_until(on_single, b"end")] == ["a", "c", "b"]


async def test_pubsub_glob_semantics_match_redis(coord: Coordination, backend_clock: object) -> None:
    # Same table on both backends: the in-process matcher must agree with Redis.
    patterns = ["h?llo", "h*llo", "h[ae]llo", "h[^e]llo", "h[a-b]llo", "h[b-a]llo", r"h\*llo", "h[]llo", "*"]
    channels = ["hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "hbllo", "h]llo"]
    async with AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(coord.bus.subscribe("sync", patterns=[p])) for p in patterns]
        for channel in channels:
            await coord.bus.publish(channel, channel)
        await coord.bus.publish("sync", b"end")
        for pattern, sub in zip(patterns, subs, strict=True):
            got = [m.channel for m in await receive_until(sub, b"end")]
            expected = [c for c in channels if glob_matches(pattern, c)]
            assert got == expected, pattern


async def test_slow_subscriber_drops_are_counted_and_block_nobody(
    coord: Coordination, backend_clock: object
) -> None:
    bus = coord.bus
    async with bus.subscribe("feed", buffer=4) as slow, bus.subscribe("feed", buffer=64) as fast:
        with trio.fail_after(5):  # publishing never waits for the slow reader
            for i in range(20):
                await bus.publish("feed", str(i))
        assert [(await receive(fast)).data for _ in range(20)] == [str(i).encode() for i in range(20)]
        # fast got message 20 after the listener offered it to slow as well
        assert slow.dropped == 16
        assert slow.delivered == 4
        assert [(await receive(slow)).data for _ in range(4)] == [b"0", b"1", b"2", b"3"]
        assert fast.dropped == 0
        health = await coord.health()
        assert health.bus.dropped == 16
        assert health.bus.subscribers == 2


async def test_shared_channel_and_resubscribe(coord: Coordination, backend_clock: object) -> None:
    bus = coord.bus
    async with bus.subscribe("room") as first:
        async with bus.subscribe("room") as second:
            await bus.publish("room", "both")
            assert (await receive(first)).data == b"both"
            assert (await receive(second)).data == b"both"
        await bus.publish("room", "first only")  # second left; first must still hear
        assert (await receive(first)).data == b"first only"
    for round_ in range(3):  # leave and come back: (un)subscribe bookkeeping stays right
        async with bus.subscribe("room") as again:
            await bus.publish("room", f"round {round_}")
            assert (await receive(again)).data == f"round {round_}".encode()
    assert coord.bus.stats().subscribers == 0


async def test_message_matching_twice_arrives_twice(coord: Coordination, backend_clock: object) -> None:
    # Redis semantics: one delivery per matching channel/pattern of the subscription.
    async with coord.bus.subscribe("a.b", patterns=["a.*", "*.b"]) as sub:
        await coord.bus.publish("a.b", "x")
        await coord.bus.publish("a.c", "y")
        got = [await receive(sub) for _ in range(4)]
        assert got == [("a.b", b"x"), ("a.b", b"x"), ("a.b", b"x"), ("a.c", b"y")]


async def test_publish_many_keeps_order(coord: Coordination, backend_clock: object) -> None:
    async with coord.bus.subscribe(patterns=["batch.*"]) as sub:
        await coord.bus.publish_many((f"batch.{i % 3}", str(i)) for i in range(50))
        got = [await receive(sub) for _ in range(50)]
        assert got == [(f"batch.{i % 3}", str(i).encode()) for i in range(50)]


async def test_cancelled_subscriber_leaves_cleanly(coord: Coordination, backend_clock: object) -> None:
    entered = trio.Event()

    async def listen_forever() -> None:
        async with coord.bus.subscribe("quiet") as sub:
            entered.set()
            async for _ in sub:
                pass

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen_forever)
            await entered.wait()
            nursery.cancel_scope.cancel()
    assert coord.bus.stats().subscribers == 0
    async with coord.bus.subscribe("quiet") as sub:  # the channel is usable again
        await coord.bus.publish("quiet", "x")
        assert (await receive(sub)).data == b"x"


async def test_subscribe_rejects_bad_arguments(coord: Coordination, backend_clock: object) -> None:
    with pytest.raises(ValueError):
        async with coord.bus.subscribe():
            pass
    with pytest.raises(ValueError):
        async with coord.bus.subscribe("a", buffer=0):
            pass
    with pytest.raises(ValueError):
        await coord.bus.publish("", "x")
    with pytest.raises(TypeError):
        await coord.bus.publish("a", 42)  # type: ignore[arg-type]


async def test_health_and_closing(
    redis_url: str | None, config: CoordinationConfig, backend_clock: object
) -> None:
    ended = trio.Event()

    async def reader(coordination: Coordination, task_status: trio.TaskStatus[None]) -> None:
        async with coordination.bus.subscribe("news") as sub:
            task_status.started()
            async for _ in sub:
                pass
        ended.set()

    async with trio.open_nursery() as nursery:
        async with open_coordination(redis_url, config=config) as coordination:
            health = await coordination.health()
            assert health.ok, health.detail
            assert health.backend == ("memory" if redis_url is None else "redis")
            await nursery.start(reader, coordination)
        with trio.fail_after(5):  # iteration ends by itself once the context exits
            await ended.wait()
    with pytest.raises(CoordinationClosed):
        await coordination.limiter.hit("k", limit=1, window=1)
    with pytest.raises(CoordinationClosed):
        await coordination.leases.acquire("k", "a", 1)
    with pytest.raises(CoordinationClosed):
        await coordination.bus.publish("news", "late")
    with pytest.raises(CoordinationClosed):
        async with coordination.bus.subscribe("news"):
            pass
    assert not (await coordination.health()).ok


async def test_body_exception_comes_out_unwrapped(
    redis_url: str | None, config: CoordinationConfig, backend_clock: object
) -> None:
    # The nurseries inside must not turn the caller's own exception into a group.
    with pytest.raises(KeyError, match="mine"):
        async with open_coordination(redis_url, config=config) as coordination:
            async with coordination.bus.subscribe("x"):
                raise KeyError("mine")


async def test_body_exception_group_is_not_flattened(
    redis_url: str | None, config: CoordinationConfig, backend_clock: object
) -> None:
    with pytest.raises(ExceptionGroup) as caught:
        async with open_coordination(redis_url, config=config), trio.open_nursery() as nursery:
            nursery.start_soon(_raise_value_error)
    assert caught.group_contains(ValueError) and len(caught.value.exceptions) == 1
    assert isinstance(caught.value.exceptions[0], ValueError)


async def _raise_value_error() -> None:
    raise ValueError("from the caller's own nursery")


# -- Redis only -----------------------------------------------------------------------


async def test_unreachable_redis_raises_unavailable_without_hanging(prefix: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with trio.fail_after(5), pytest.raises(CoordinationUnavailable):
        async with open_coordination(url, config=make_config(prefix)):
            pytest.fail("opened a coordination on a closed port")


async def test_silent_server_times_out_as_unavailable(prefix: str) -> None:
    # Accepts connections and never answers: the timeout path, not the refused one.
    async def hold(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        started = trio.current_time()
        with trio.fail_after(5), pytest.raises(CoordinationUnavailable):
            async with open_coordination(f"redis://127.0.0.1:{port}/0", config=make_config(prefix)):
                pytest.fail("opened a coordination on a server that never answers")
        assert trio.current_time() - started < make_config(prefix).redis.operation_deadline + 0.5
        nursery.cancel_scope.cancel()


@pytest.fixture
async def rcoord(prefix: str) -> AsyncIterator[Coordination]:
    require_redis()
    async with open_coordination(REDIS_URL, config=make_config(prefix)) as coordination:
        yield coordination


_PUBLISHER = """
import os, sys, trio
sys.path.insert(0, sys.argv[3])
from storage.coordination import CoordinationConfig, RedisConfig, open_coordination

async def main() -> None:
    config = CoordinationConfig(redis=RedisConfig(key_prefix=sys.argv[2]))
    async with open_coordination(sys.argv[1], config=config) as coord:
        decision = await coord.limiter.hit("shared-limit", limit=1, window=30)
        await coord.bus.publish("xproc", f"pid={os.getpid()} allowed={decision.allowed}")

trio.run(main)
"""


@pytest.mark.redis
@pytest.mark.slow
async def test_cross_process_delivery_and_shared_state(rcoord: Coordination, prefix: str) -> None:
    assert (await rcoord.limiter.hit("shared-limit", limit=1, window=30)).allowed
    async with rcoord.bus.subscribe("xproc") as sub:
        with trio.fail_after(20):
            await trio.run_process(
                [sys.executable, "-c", _PUBLISHER, REDIS_URL, prefix, str(ROOT)],
                capture_stdout=True,
                capture_stderr=True,
            )
        channel, data = await receive(sub)
    assert channel == "xproc"
    assert data.startswith(b"pid=") and data != f"pid={os.getpid()}".encode()
    # The other process saw the hit this one made: the limit is shared across processes.
    assert data.endswith(b"allowed=False")


@pytest.mark.redis
async def test_prefix_glob_characters_are_escaped(prefix: str) -> None:
    require_redis()
    weird = prefix + "[x]*:"
    lookalike = prefix + "x-anything:"  # would match the pattern if the prefix were not escaped
    async with (
        open_coordination(REDIS_URL, config=make_config(weird)) as own,
        open_coordination(REDIS_URL, config=make_config(lookalike)) as other,
        own.bus.subscribe(patterns=["*"]) as sub,
    ):
        await other.bus.publish("c", "intruder")
        await own.bus.publish("c", "own")
        assert await receive(sub) == ("c", b"own")


class PrivateRedis:
    """A throwaway redis-server on its own port, for outage tests."""

    def __init__(self, exe: str, workdir: str) -> None:
        self.exe = exe
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if _ping(self.url):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"private redis-server on port {self.port} did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)


def _ping(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    exe = shutil.which("redis-server")
    if exe is None:
        message = "!!! redis-server binary not found - outage tests NOT RUN"
        if IN_CI:
            pytest.fail(message + " [CI=true]")
        pytest.skip(message)
    with tempfile.TemporaryDirectory() as workdir:
        server = PrivateRedis(exe, workdir)
        server.start()
        try:
            yield server
        finally:
            if server.proc is not None:
                server.signal(18)  # SIGCONT, in case a test left it stopped
            server.kill()


async def publish_until_received(coord: Coordination, sub: AsyncIterator[Message], channel: str) -> Message:
    """After an outage: the listener re-subscribes in the background; keep publishing."""
    with trio.fail_after(10):
        while True:
            try:
                await coord.bus.publish(channel, "ping")
            except CoordinationUnavailable:
                pass
            with trio.move_on_after(0.1):
                return await anext(sub)


@pytest.mark.slow
async def test_outage_raises_unavailable_then_recovers(private_redis: PrivateRedis, prefix: str) -> None:
    async with (
        open_coordination(private_redis.url, config=make_config(prefix, listener_idle_ping=0.2)) as coord,
        coord.bus.subscribe("alerts") as sub,
    ):
        await coord.bus.publish("alerts", "before")
        assert (await receive(sub)).data == b"before"

        private_redis.kill()
        with trio.fail_after(5):  # every operation fails fast instead of hanging
            with pytest.raises(CoordinationUnavailable):
                await coord.limiter.hit("k", limit=1, window=1)
            with pytest.raises(CoordinationUnavailable):
                await coord.leases.acquire("l", "a", 1)
            with pytest.raises(CoordinationUnavailable):
                await coord.bus.publish("alerts", "lost")
            health = await coord.health()
        assert not health.ok and "PING failed" in health.detail

        private_redis.start()  # same port, empty server: script cache and subscriptions gone
        assert (await publish_until_received(coord, sub, "alerts")).data == b"ping"
        assert (await coord.limiter.hit("k", limit=1, window=1)).allowed
        assert await coord.leases.acquire("l", "a", 1)
        assert (await coord.health()).ok
        assert isinstance(coord.bus, RedisBus) and coord.bus.reconnects >= 1


@pytest.mark.slow
async def test_silent_connection_is_detected_and_replaced(private_redis: PrivateRedis, prefix: str) -> None:
    # SIGSTOP keeps the TCP connection open but silent, like a half-open socket.
    async with (
        open_coordination(private_redis.url, config=make_config(prefix, listener_idle_ping=0.1)) as coord,
        coord.bus.subscribe("alerts") as sub,
    ):
        bus = coord.bus
        assert isinstance(bus, RedisBus)
        private_redis.signal(19)  # SIGSTOP
        try:
            with trio.fail_after(5):
                while bus.state != "reconnecting":  # noqa: ASYNC110  (polling another task's state)
                    await trio.sleep(0.02)
            assert not (await coord.health()).ok
        finally:
            private_redis.signal(18)  # SIGCONT
        assert (await publish_until_received(coord, sub, "alerts")).data == b"ping"
        with trio.fail_after(5):
            while not (health := await coord.health()).ok:  # noqa: ASYNC110  (polling Redis)
                await trio.sleep(0.05)
        assert health.detail.endswith("listening")


@pytest.mark.redis
async def test_one_redis_subscription_per_channel_and_unsubscribe_on_leave(
    rcoord: Coordination, prefix: str
) -> None:
    def numsub() -> int:
        with redis.Redis.from_url(REDIS_URL) as client:
            return int(dict(client.pubsub_numsub(prefix + "room"))[(prefix + "room").encode()])

    async with rcoord.bus.subscribe("room"), rcoord.bus.subscribe("room"):
        assert numsub() == 1  # many local subscribers share one Redis subscription
    with trio.fail_after(5):
        while numsub() != 0:  # noqa: ASYNC110  (the janitor unsubscribes in the background)
            await trio.sleep(0.01)
