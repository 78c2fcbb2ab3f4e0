"""In-process coordination: exact timing under MockClock, the glob matcher, config checks.

The behaviour shared with Redis is covered by the contract suite in
tests/integration/test_coordination_redis.py (which runs it against both backends).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.coordination import (
    BusConfig,
    CoordinationConfig,
    RedisConfig,
    open_coordination,
)
from storage.coordination._glob import escape_glob, glob_matches
from storage.coordination._local import LocalCoordination

CONFIG = CoordinationConfig()
SWEEP_CONFIG = CoordinationConfig(local_sweep_interval=5.0)


@pytest.fixture
async def local() -> AsyncIterator[LocalCoordination]:
    # pytest-trio only installs a clock passed to the test itself: insist on it, or
    # these tests would silently sleep in real time.
    assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock), "add autojump_clock to the test"
    async with open_coordination(None, config=SWEEP_CONFIG) as coordination:
        assert isinstance(coordination, LocalCoordination)
        yield coordination


@pytest.mark.parametrize("url", [None, ""])
async def test_no_url_means_in_process(url: str | None) -> None:
    async with open_coordination(url, config=CONFIG) as coordination:
        assert isinstance(coordination, LocalCoordination)
        health = await coordination.health()
        assert health.ok and health.backend == "memory" and health.latency is None


# -- rate limiter: exact boundaries ---------------------------------------------------


async def test_window_boundary_is_exact(
    local: LocalCoordination, autojump_clock: trio.testing.MockClock
) -> None:
    hit = local.limiter.hit
    for _ in range(3):
        assert (await hit("k", limit=3, window=1.0)).allowed
    await trio.sleep(0.75)
    denied = await hit("k", limit=3, window=1.0)
    assert not denied.allowed and denied.retry_after == pytest.approx(0.25)
    await trio.sleep(0.25 - 1e-6)
    assert not (await hit("k", limit=3, window=1.0)).allowed
    await trio.sleep(1e-6)  # exactly one window after the first hits
    decision = await hit("k", limit=3, window=1.0)
    assert decision.allowed and decision.remaining == 2


async def test_window_slides_rather_than_resets(
    local: LocalCoordination, autojump_clock: trio.testing.MockClock
) -> None:
    hit = local.limiter.hit
    assert (await hit("k", limit=2, window=1.0)).allowed  # t=0
    await trio.sleep(0.5)
    assert (await hit("k", limit=2, window=1.0)).allowed  # t=0.5
    await trio.sleep(0.4)
    assert (await hit("k", limit=2, window=1.0)).retry_after == pytest.approx(0.1)  # t=0.9
    await trio.sleep(0.1)
    assert (await hit("k", limit=2, window=1.0)).allowed  # t=1.0: the t=0 hit expired
    await trio.sleep(0.2)
    # A fixed window would have reset at t=1.0; a sliding one still counts t=0.5 and t=1.0.
    denied = await hit("k", limit=2, window=1.0)  # t=1.2
    assert not denied.allowed and denied.retry_after == pytest.approx(0.3)


async def test_sleeping_retry_after_is_always_enough(
    local: LocalCoordination, autojump_clock: trio.testing.MockClock
) -> None:
    for _ in range(5):
        decision = await local.limiter.hit("k", limit=2, window=0.7)
        while not decision.allowed:
            await trio.sleep(decision.retry_after)
            decision = await local.limiter.hit("k", limit=2, window=0.7)
            assert decision.allowed


async def test_lowered_limit_waits_for_the_right_entry(
    local: LocalCoordination, autojump_clock: trio.testing.MockClock
) -> None:
    hit = local.limiter.hit
    for _ in range(4):  # t = 0, 1, 2, 3 under limit 10
        assert (await hit("k", limit=10, window=10.0)).allowed
        await trio.sleep(1)
    # t=4, limit 2: four hits in the window; a slot frees when the third-newest (t=2)
    # expires, not the oldest.
    denied = await hit("k", limit=2, window=10.0)
    assert not denied.allowed and denied.retry_after == pytest.approx(8.0)


async def test_denied_hits_do_not_count(
    local: LocalCoordination, autojump_clock: trio.testing.MockClock
) -> None:
    hit = local.limiter.hit
    assert (await hit("k", limit=1, window=1.0)).allowed
    for _ in range(100):
        assert not (await hit("k", limit=1, window=1.0)).allowed
        await trio.sleep(0.005)
    await trio.sleep(0.5)  # t=1.0: only the single allowed hit ever counted
    assert (await hit("k", limit=1, window=1.0)).allowed


async def test_idle_rate_keys_are_swept(
    local: LocalCoordination, autojump_clock: trio.testing.MockClock
) -> None:
    for i in range(50):
        await local.limiter.hit(f"ip-{i}", limit=1, window=1.0)
    assert len(local.limiter) == 50
    await trio.sleep(5.0)  # past the sweep interval and every window
    await local.limiter.hit("fresh", limit=1, window=1.0)
    assert len(local.limiter) == 1


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 4),
    window=st.sampled_from([0.5, 1.0, 2.5]),
    steps=st.lists(st.one_of(st.just("hit"), st.integers(1, 30), st.just("wait")), max_size=40),
)
def test_limiter_matches_sliding_window_model(limit: int, window: float, steps: list[object]) -> None:
    """Allowed iff fewer than `limit` allowed hits in (now - window, now]; remaining and
    retry_after follow from that; sleeping retry_after always suffices."""

    async def run() -> None:
        async with open_coordination(None, config=CONFIG) as coordination:
            allowed_at: list[float] = []
            last_retry = 0.0
            for step in steps:
                if isinstance(step, int):
                    await trio.sleep(step / 10)
                    continue
                waited = step == "wait" and last_retry > 0
                if waited:
                    await trio.sleep(last_retry)
                now = trio.current_time()
                live = [t for t in allowed_at if t + window > now]
                decision = await coordination.limiter.hit("k", limit=limit, window=window)
                assert decision.allowed == (len(live) < limit)
                if waited:
                    assert decision.allowed
                if decision.allowed:
                    allowed_at.append(now)
                    assert decision.remaining == limit - len(live) - 1
                    assert decision.retry_after == 0.0
                else:
                    assert decision.remaining == 0
                    assert decision.retry_after == pytest.approx(live[len(live) - limit] + window - now)
                    assert 0 < decision.retry_after <= window
                last_retry = decision.retry_after

    trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))


# -- leases ---------------------------------------------------------------------------


async def test_lease_expires_exactly_at_ttl(
    local: LocalCoordination, autojump_clock: trio.testing.MockClock
) -> None:
    leases = local.leases
    assert await leases.acquire("job", "a", 2.0)
    await trio.sleep(2.0 - 1e-6)
    assert not await leases.acquire("job", "b", 2.0)
    assert await leases.renew("job", "a", 2.0)  # renewed at t~2: now lives until t~4
    await trio.sleep(2.0 - 1e-6)
    assert not await leases.acquire("job", "b", 2.0)
    await trio.sleep(2e-6)
    assert not await leases.renew("job", "a", 2.0)  # expired: too late to renew
    assert await leases.acquire("job", "b", 2.0)


async def test_expired_leases_are_swept(
    local: LocalCoordination, autojump_clock: trio.testing.MockClock
) -> None:
    for i in range(20):
        assert await local.leases.acquire(f"job-{i}", "a", 1.0)
    assert len(local.leases) == 20
    await trio.sleep(5.0)
    assert await local.leases.acquire("fresh", "a", 1.0)
    assert len(local.leases) == 1


# -- pub/sub --------------------------------------------------------------------------


async def test_full_buffer_drops_newest_and_counts(
    local: LocalCoordination, autojump_clock: trio.testing.MockClock
) -> None:
    async with local.bus.subscribe("feed", buffer=2) as sub:
        for i in range(5):
            await local.bus.publish("feed", str(i))
        assert (sub.delivered, sub.dropped, sub.pending) == (2, 3, 2)
        assert [(await sub.receive()).data for _ in range(2)] == [b"0", b"1"]
        await local.bus.publish("feed", "5")  # room again: delivery resumes
        assert (await sub.receive()).data == b"5"
    assert local.bus.stats().dropped == 3


async def test_stuck_subscribers_never_block_publishers(
    local: LocalCoordination, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        stuck = trio.Event()

        async def never_reads(task_status: trio.TaskStatus[None]) -> None:
            async with local.bus.subscribe("hot", buffer=1):
                task_status.started()
                await stuck.wait()

        for _ in range(50):
            await nursery.start(never_reads)
        # Under autojump a blocked publisher would jump the clock to this deadline.
        with trio.fail_after(1):
            await local.bus.publish_many(("hot", str(i)) for i in range(1000))
        assert local.bus.stats().dropped == 50 * 999
        stuck.set()


async def test_default_buffer_comes_from_config(autojump_clock: trio.testing.MockClock) -> None:
    config = CoordinationConfig(bus=BusConfig(subscriber_buffer=3))
    async with open_coordination(None, config=config) as coordination, coordination.bus.subscribe("x") as sub:
        for i in range(10):
            await coordination.bus.publish("x", str(i))
        assert sub.dropped == 7


async def test_duplicate_names_in_one_subscription_count_once(
    local: LocalCoordination, autojump_clock: trio.testing.MockClock
) -> None:
    async with local.bus.subscribe("a", "a", patterns=["b*", "b*"]) as sub:
        assert sub.channels == ("a",) and sub.patterns == ("b*",)
        await local.bus.publish("a", "1")
        await local.bus.publish("b", "2")
        assert [await sub.receive() for _ in range(2)] == [("a", b"1"), ("b", b"2")]
        assert sub.pending == 0


# -- glob matching (must agree with Redis; the contract suite checks a table on Redis) -


def redis_stringmatch(pattern: bytes, string: bytes) -> bool:
    """Straight port of Redis' util.c stringmatchlen (case-sensitive), as a reference."""

    def match(p: int, s: int) -> bool:
        n = len(pattern)
        while p < n and s < len(string):
            c = pattern[p]
            if c == ord("*"):
                while p + 1 < n and pattern[p + 1] == ord("*"):
                    p += 1
                if p + 1 == n:
                    return True
                while s < len(string):
                    if match(p + 1, s):
                        return True
                    s += 1
                return False
            if c == ord("?"):
                s += 1
            elif c == ord("["):
                p += 1
                negate = p < n and pattern[p] == ord("^")
                if negate:
                    p += 1
                matched = False
                while True:
                    if p < n and pattern[p] == ord("\\") and n - p >= 2:
                        p += 1
                        matched |= pattern[p] == string[s]
                    elif p < n and pattern[p] == ord("]"):
                        break
                    elif p >= n:
                        p -= 1
                        break
                    elif n - p >= 3 and pattern[p + 1] == ord("-"):
                        lo, hi = sorted((pattern[p], pattern[p + 2]))
                        p += 2
                        matched |= lo <= string[s] <= hi
                    else:
                        matched |= pattern[p] == string[s]
                    p += 1
                if negate:
                    matched = not matched
                if not matched:
                    return False
                s += 1
            else:
                if c == ord("\\") and n - p >= 2:
                    p += 1
                if pattern[p] != string[s]:
                    return False
                s += 1
            p += 1
            if s == len(string):
                while p < n and pattern[p] == ord("*"):
                    p += 1
                break
        return p == n and s == len(string)

    return match(0, 0)


@pytest.mark.parametrize(
    ("pattern", "channel", "expected"),
    [
        ("user.*", "user.42", True),
        ("user.*", "user.", True),
        ("user.*", "users.42", False),
        ("h?llo", "hello", True),
        ("h?llo", "hllo", False),
        ("h[ae]llo", "hallo", True),
        ("h[ae]llo", "hillo", False),
        ("h[^e]llo", "hallo", True),
        ("h[^e]llo", "hello", False),
        ("h[a-c]llo", "hbllo", True),
        ("h[c-a]llo", "hbllo", True),  # reversed range, as Redis allows
        ("h[]llo", "hllo", False),
        (r"h\*llo", "h*llo", True),
        (r"h\*llo", "hello", False),
        ("a[bc", "ab", True),  # unterminated class runs to the end
        ("*", "anything\nwith newline", True),
        ("caf?", "café", False),  # byte-wise like Redis: é is two bytes
        ("caf??", "café", True),
    ],
)
def test_glob_table(pattern: str, channel: str, expected: bool) -> None:
    assert glob_matches(pattern, channel) is expected
    assert redis_stringmatch(pattern.encode(), channel.encode()) is expected


@settings(max_examples=600, deadline=None)
@given(
    pattern=st.text(alphabet="ab*?[]^-\\", max_size=8),
    channel=st.text(alphabet="ab-]^*\\", min_size=1, max_size=8),
)
def test_glob_agrees_with_redis_algorithm(pattern: str, channel: str) -> None:
    assert glob_matches(pattern, channel) == redis_stringmatch(pattern.encode(), channel.encode())


@given(literal=st.text(min_size=1, max_size=12), other=st.text(min_size=1, max_size=12))
def test_escaped_text_matches_only_itself(literal: str, other: str) -> None:
    pattern = escape_glob(literal)
    assert glob_matches(pattern, literal)
    assert glob_matches(pattern + "*", literal + other)
    assert glob_matches(pattern, other) == (other == literal)


# -- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: BusConfig(subscriber_buffer=0),
        lambda: BusConfig(subscribe_timeout=0),
        lambda: BusConfig(reconnect_backoff_min=2, reconnect_backoff_max=1),
        lambda: BusConfig(listener_idle_ping=float("nan")),
        lambda: RedisConfig(retries=-1),
        lambda: RedisConfig(command_timeout=-1),
        lambda: CoordinationConfig(local_sweep_interval=0),
    ],
)
def test_invalid_config_is_rejected(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        CONFIG.seed = 3  # type: ignore[misc]
