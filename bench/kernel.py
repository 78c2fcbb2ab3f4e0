"""Kernel benchmarks: each figure next to the raw trio limit measured in the same run.

    .venv/bin/python bench/kernel.py [--quick]

Figures (see bench/README.md): tell throughput, sequential ask round trips, spawn cost, idle keyed
actor memory (tracemalloc and whole-process RSS, measured in fresh subprocesses so earlier phases
do not inflate them), and crash -> next-message restart latency. Throughput and spawn take the best
of several repetitions after a warm-up (kernel and limit runs interleaved); latencies take the
median over repetitions of each percentile. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import outcome
import trio
from trio.lowlevel import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernel import Actor, ActorSystem, ChildSpec, Supervisor  # noqa: E402

perf = time.perf_counter
MAILBOX = 1024  # ChildSpec's default capacity; the raw channels get the same buffer


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


async def best_of(reps: int, *runs: Callable[[], Awaitable[float]]) -> list[list[float]]:
    """Run each measurement ``reps`` times, interleaved; one list of results per measurement."""
    results: list[list[float]] = [[] for _ in runs]
    for _ in range(reps):
        for index, run in enumerate(runs):
            gc.collect()
            results[index].append(await run())
    return results


# --- tell ----------------------------------------------------------------------------------------
class Counter(Actor):
    def __init__(self) -> None:
        self.n = 0

    async def receive(self, msg: Any) -> Any:
        if msg is None:
            return self.n
        self.n += 1
        return None


async def kernel_tell(n: int) -> float:
    tree = Supervisor("root", children=[ChildSpec("counter", Counter, mailbox=MAILBOX)])
    async with ActorSystem.start(tree) as system:
        ref = system.ref("root/counter")
        await ref.ask(None)  # started
        started = perf()
        for i in range(n):
            await ref.tell(i)
        handled = await ref.ask(None)
        elapsed = perf() - started
    assert handled == n, handled
    return n / elapsed


async def raw_tell(n: int) -> float:
    send, recv = trio.open_memory_channel[int](MAILBOX)
    done = trio.Event()
    count = 0

    async def consumer() -> None:
        nonlocal count
        while count < n:
            try:
                recv.receive_nowait()
            except trio.WouldBlock:
                await recv.receive()
            count += 1
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await checkpoint()
        started = perf()
        for i in range(n):
            try:
                send.send_nowait(i)
            except trio.WouldBlock:
                await send.send(i)
        await done.wait()
        elapsed = perf() - started
    return n / elapsed


# --- ask -----------------------------------------------------------------------------------------
class Echo(Actor):
    async def receive(self, msg: Any) -> Any:
        return msg


async def kernel_ask(n: int) -> float:
    tree = Supervisor("root", children=[ChildSpec("echo", Echo, mailbox=MAILBOX)])
    async with ActorSystem.start(tree) as system:
        ref = system.ref("root/echo")
        await ref.ask(-1)
        started = perf()
        for i in range(n):
            await ref.ask(i)
        elapsed = perf() - started
    return n / elapsed


async def raw_ask(n: int) -> float:
    req_send, req_recv = trio.open_memory_channel[int](MAILBOX)
    rep_send, rep_recv = trio.open_memory_channel[int](1)

    async def server() -> None:
        async for msg in req_recv:
            await rep_send.send(msg)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await req_send.send(-1)
        await rep_recv.receive()
        started = perf()
        for i in range(n):
            await req_send.send(i)
            await rep_recv.receive()
        elapsed = perf() - started
        nursery.cancel_scope.cancel()
    return n / elapsed


async def floor_ask(n: int) -> float:
    """The least a request/reply between two trio tasks can cost: the asker reschedules the other
    task and parks, the other hands the value back and parks. Nothing else runs; every round trip is
    two passes of trio's scheduler (each an epoll_wait and a task step), which an ask must also make."""
    served: list[int] = []
    ready = trio.Event()
    parked: list[trio.lowlevel.Task] = []

    def abort(_: Any) -> trio.lowlevel.Abort:
        return trio.lowlevel.Abort.SUCCEEDED

    async def server() -> None:
        parked.append(trio.lowlevel.current_task())
        ready.set()
        while True:
            value = await trio.lowlevel.wait_task_rescheduled(abort)
            served.append(value)
            trio.lowlevel.reschedule(asker, outcome.Value(value))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        await ready.wait()
        await checkpoint()
        asker = trio.lowlevel.current_task()
        started = perf()
        for i in range(n):
            trio.lowlevel.reschedule(parked[0], outcome.Value(i))
            await trio.lowlevel.wait_task_rescheduled(abort)
        elapsed = perf() - started
        nursery.cancel_scope.cancel()
    assert len(served) == n
    return n / elapsed


# --- spawn ---------------------------------------------------------------------------------------
async def kernel_spawn(n: int) -> float:
    """Microseconds per ``system.spawn`` into an empty root, until every spawned actor is running."""
    async with ActorSystem.start(Supervisor("root")) as system:
        root = system.root
        started = perf()
        for i in range(n):
            await system.spawn("root", ChildSpec(f"a{i}", Actor, restart="temporary"))
        while any(child.state != "running" for child in root.children):
            await checkpoint()
        elapsed = perf() - started
        assert len(root.children) == n
    return elapsed / n * 1e6


async def raw_spawn(n: int) -> float:
    """Microseconds per ``nursery.start_soon`` of a task that parks (spawn, like it, does not yield)."""
    parked = 0

    async def task() -> None:
        nonlocal parked
        parked += 1
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        started = perf()
        for _ in range(n):
            nursery.start_soon(task)
        while parked < n:
            await checkpoint()
        elapsed = perf() - started
        nursery.cancel_scope.cancel()
    return elapsed / n * 1e6


# --- restart -------------------------------------------------------------------------------------
_crashed_at = [0.0]


class Fragile(Actor):
    async def receive(self, msg: Any) -> Any:
        if msg == "boom":
            _crashed_at[0] = perf()
            raise RuntimeError("boom")
        return msg


async def kernel_restart(cycles: int, warmup: int, within: float, siblings: int = 0) -> list[float]:
    """Seconds from the raise in ``receive`` to the reply of the ask queued right behind it."""
    children = [ChildSpec(f"sibling{i}", Actor) for i in range(siblings)]
    tree = Supervisor("root", max_restarts=10**9, within=within, base_delay=0.0,
                      children=[*children, ChildSpec("fragile", Fragile, mailbox=MAILBOX)])
    latencies: list[float] = []
    async with ActorSystem.start(tree) as system:
        ref = system.ref("root/fragile")
        await ref.ask("hello")
        for i in range(warmup + cycles):
            await ref.tell("boom")
            await ref.ask("ping")
            if i >= warmup:
                latencies.append(perf() - _crashed_at[0])
        assert system.node("root/fragile").restarts == warmup + cycles
    return sorted(latencies)


async def raw_restart(cycles: int, warmup: int) -> list[float]:
    """The same hops by hand: the worker task dies, a supervisor task is woken and starts a new
    worker on the same request channel, which answers the queued request."""
    req_send, req_recv = trio.open_memory_channel[Any](MAILBOX)
    rep_send, rep_recv = trio.open_memory_channel[Any](1)
    crashed_at = 0.0

    async def worker(exited: trio.Event) -> None:
        nonlocal crashed_at
        try:
            while True:
                msg = await req_recv.receive()
                if msg == "boom":
                    crashed_at = perf()
                    raise RuntimeError("boom")
                rep_send.send_nowait(msg)
        except RuntimeError:
            exited.set()

    async def supervisor(nursery: trio.Nursery) -> None:
        while True:
            exited = trio.Event()
            nursery.start_soon(worker, exited)
            await exited.wait()

    latencies: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor, nursery)
        for i in range(warmup + cycles):
            req_send.send_nowait("boom")
            req_send.send_nowait("ping")
            await rep_recv.receive()
            if i >= warmup:
                latencies.append(perf() - crashed_at)
        nursery.cancel_scope.cancel()
    return sorted(latencies)


# --- keyed (run in a fresh subprocess) -------------------------------------------------------------
class Device(Actor):
    def __init__(self, key: str) -> None:
        self.n = 0

    async def receive(self, msg: Any) -> Any:
        self.n += 1
        return None


async def keyed_child(n: int, pace: int, trace: bool) -> dict[str, Any]:
    """One message to each of ``n`` keys, then wait until every key's actor is idle (holds no task).

    ``pace`` > 0 makes the producer checkpoint every ``pace`` sends (as a producer fed by the network
    would); 0 sends the whole burst without yielding, so every cold key's task is pending at once.
    """
    tree = Supervisor("root", children=[
        ChildSpec("dev", Device, keyed=True, idle_timeout=1e9, max_live=n + 1000),
    ])
    keys = [f"dev-{i:06d}" for i in range(n)]
    async with ActorSystem.start(tree) as system:
        ref = system.ref("root/dev")
        node: Any = system.node("root/dev")
        while node.nursery is None:
            await checkpoint()
        gc.collect()
        baseline_rss = rss_mb()
        traced_before = tracemalloc.get_traced_memory()[0] if trace else 0
        started = perf()
        peak_tasks = 0
        for i, key in enumerate(keys):
            await ref.key(key).tell(1)
            if pace and i % pace == pace - 1:
                peak_tasks = max(peak_tasks, len(node.nursery.child_tasks))
                await checkpoint()
        peak_tasks = max(peak_tasks, len(node.nursery.child_tasks))
        sent = perf()
        while any(entity.running for entity in node.entities.values()):
            await checkpoint()
        settled = perf()
        gc.collect()
        traced_after = tracemalloc.get_traced_memory()[0] if trace else 0
        result = {
            "n": n,
            "live": len(node.entities),
            "idle_tasks": len(node.nursery.child_tasks),
            "handled": sum(entity.actor.n for entity in node.entities.values()),
            "peak_tasks": peak_tasks,
            "first_msg_us": (sent - started) / n * 1e6,
            "settle_s": settled - sent,
            "baseline_rss_mb": baseline_rss,
            "rss_mb": rss_mb(),
            "bytes_per_actor": (traced_after - traced_before) / n if trace else None,
        }
        if trace:
            # What one task per actor would cost instead: a parked trio task, same measure.
            tasks = n // 10
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            parked = 0

            async def task() -> None:
                nonlocal parked
                parked += 1
                await trio.sleep_forever()

            async with trio.open_nursery() as nursery:
                for _ in range(tasks):
                    nursery.start_soon(task)
                while parked < tasks:
                    await checkpoint()
                await checkpoint()
                gc.collect()
                result["task_bytes"] = (tracemalloc.get_traced_memory()[0] - before) / tasks
                nursery.cancel_scope.cancel()
    return result


def run_keyed(n: int, pace: int, trace: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--keyed-child", str(n), "--pace", str(pace)]
    if trace:
        command.append("--trace")
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# --- driver --------------------------------------------------------------------------------------
def line(label: str, value: float, unit: str, limit: float | None = None, limit_label: str = "trio limit",
         target: str = "") -> None:
    text = f"{label:<34} {value:>12,.1f} {unit:<7}"
    if limit is not None:
        text += f"  {limit_label} {limit:>12,.1f}  ratio {value / limit:5.2f}"
    if target:
        text += f"  [{target}]"
    print(text, flush=True)


def verdict(ok: bool, target: str) -> str:
    return f"{'ok' if ok else 'MISSED'}: {target}"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    q = args.quick
    tell_n = 200_000 if q else 1_000_000
    ask_n = 20_000 if q else 50_000
    spawn_n = 10_000
    cycles = 500 if q else 2_000
    reps = 2 if q else 3
    out: dict[str, Any] = {}

    # tell
    await kernel_tell(tell_n // 10)
    await raw_tell(tell_n // 10)
    kernel, raw = await best_of(reps, lambda: kernel_tell(tell_n), lambda: raw_tell(tell_n))
    out["tell_per_s"], out["tell_limit_per_s"] = max(kernel), max(raw)
    out["tell_ratio"] = out["tell_per_s"] / out["tell_limit_per_s"]
    line(f"tell 1->1 ({tell_n:,} msgs)", out["tell_per_s"], "msg/s", out["tell_limit_per_s"],
         target=verdict(out["tell_per_s"] >= 1e6, ">= 1,000,000 msg/s"))

    # ask
    await kernel_ask(ask_n // 10)
    await raw_ask(ask_n // 10)
    kernel, raw, floor = await best_of(reps, lambda: kernel_ask(ask_n), lambda: raw_ask(ask_n),
                                       lambda: floor_ask(ask_n))
    out["ask_per_s"], out["ask_limit_per_s"], out["ask_floor_per_s"] = max(kernel), max(raw), max(floor)
    out["ask_ratio"] = out["ask_per_s"] / out["ask_limit_per_s"]
    out["ask_floor_ratio"] = out["ask_per_s"] / out["ask_floor_per_s"]
    line(f"ask sequential ({ask_n:,})", out["ask_per_s"], "ask/s", out["ask_limit_per_s"],
         target=verdict(out["ask_per_s"] >= 70_000, ">= 70,000 ask/s"))
    line("  beside trio's scheduler floor", out["ask_per_s"], "ask/s", out["ask_floor_per_s"], "two tasks",
         target="two scheduler passes per round trip, nothing else")

    # spawn
    await kernel_spawn(1_000)
    await raw_spawn(1_000)
    kernel, raw = await best_of(reps, lambda: kernel_spawn(spawn_n), lambda: raw_spawn(spawn_n))
    out["spawn_us"], out["spawn_limit_us"] = min(kernel), min(raw)
    out["spawn_ratio"] = out["spawn_us"] / out["spawn_limit_us"]
    line(f"spawn ({spawn_n:,} actors, one root)", out["spawn_us"], "us", out["spawn_limit_us"],
         target=verdict(out["spawn_us"] <= 50, "<= 50 us"))
    gc.disable()
    try:
        out["spawn_us_gc_off"] = min((await best_of(2, lambda: kernel_spawn(spawn_n)))[0])
    finally:
        gc.enable()
    line("  same, gc disabled", out["spawn_us_gc_off"], "us", out["spawn_limit_us"])
    small = min((await best_of(reps, lambda: kernel_spawn(1_000)))[0])
    out["spawn_us_1k"] = small
    line("  same, 1,000 actors", small, "us", out["spawn_limit_us"])

    # restart
    window = 0.01
    p50s, p99s, raw50, raw99, wide50, wide99 = [], [], [], [], [], []
    await kernel_restart(cycles // 4, 0, window)
    for _ in range(reps):
        gc.collect()
        lat = await kernel_restart(cycles, 50, window)
        p50s.append(pct(lat, 50))
        p99s.append(pct(lat, 99))
        gc.collect()
        lat = await raw_restart(cycles, 50)
        raw50.append(pct(lat, 50))
        raw99.append(pct(lat, 99))
        gc.collect()
        lat = await kernel_restart(cycles, 50, 60.0)
        wide50.append(pct(lat, 50))
        wide99.append(pct(lat, 99))
    med = statistics.median
    out["restart_p50_ms"], out["restart_p99_ms"] = med(p50s) * 1e3, med(p99s) * 1e3
    out["restart_limit_p50_ms"], out["restart_limit_p99_ms"] = med(raw50) * 1e3, med(raw99) * 1e3
    out["restart_ratio_p50"] = out["restart_p50_ms"] / out["restart_limit_p50_ms"]
    out["restart_p50_ms_within60"], out["restart_p99_ms_within60"] = med(wide50) * 1e3, med(wide99) * 1e3
    line(f"restart p50 ({cycles:,} crashes)", out["restart_p50_ms"] * 1e3, "us", out["restart_limit_p50_ms"] * 1e3,
         target=f"within={window}s, base_delay=0")
    line(f"restart p99 ({cycles:,} crashes)", out["restart_p99_ms"] * 1e3, "us", out["restart_limit_p99_ms"] * 1e3)
    line("  p50 with within=60s", out["restart_p50_ms_within60"] * 1e3, "us", out["restart_limit_p50_ms"] * 1e3,
         target="every restart stays in the window")
    line("  p99 with within=60s", out["restart_p99_ms_within60"] * 1e3, "us", out["restart_limit_p99_ms"] * 1e3)
    gc.collect()
    lat = await kernel_restart(cycles // 4, 50, window, siblings=10_000)
    out["restart_p50_ms_10k_siblings"], out["restart_p99_ms_10k_siblings"] = pct(lat, 50) * 1e3, pct(lat, 99) * 1e3
    line("  p50 with 10,000 idle siblings", out["restart_p50_ms_10k_siblings"] * 1e3, "us",
         out["restart_limit_p50_ms"] * 1e3, target=f"one_for_one, {cycles // 4:,} crashes")
    line("  p99 with 10,000 idle siblings", out["restart_p99_ms_10k_siblings"] * 1e3, "us",
         out["restart_limit_p99_ms"] * 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts, fewer repetitions")
    parser.add_argument("--keyed", type=int, default=100_000, help="keyed actors for the memory figures")
    parser.add_argument("--keyed-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pace", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.keyed_child is not None:
        if args.trace:
            tracemalloc.start()
        print(json.dumps(trio.run(keyed_child, args.keyed_child, args.pace, args.trace)))
        return

    began = perf()
    print(f"vigil kernel bench: python {sys.version.split()[0]}, trio {trio.__version__}", flush=True)
    out = trio.run(main_async, args)

    n = args.keyed
    burst = run_keyed(n, 0, False)
    paced = run_keyed(n, 1000, False)
    traced = run_keyed(n, 1000, True)
    for result in (burst, paced, traced):
        assert result["live"] == n and result["handled"] == n and result["idle_tasks"] == 0, result
    out["keyed_actor_bytes"] = traced["bytes_per_actor"]
    out["keyed_task_bytes"] = traced["task_bytes"]
    out["rss_100k_keyed_mb"] = burst["rss_mb"]
    out["rss_100k_keyed_paced_mb"] = paced["rss_mb"]
    out["rss_baseline_mb"] = burst["baseline_rss_mb"]
    out["keyed_idle_tasks"] = burst["idle_tasks"]
    out["keyed_burst_peak_tasks"] = burst["peak_tasks"]
    out["keyed_paced_peak_tasks"] = paced["peak_tasks"]
    out["keyed_first_msg_us"] = paced["first_msg_us"]
    out["keyed_first_msg_us_burst"] = burst["first_msg_us"] + burst["settle_s"] / n * 1e6
    line("idle keyed actor (tracemalloc)", out["keyed_actor_bytes"], "B", out["keyed_task_bytes"],
         limit_label="parked trio task", target=verdict(out["keyed_actor_bytes"] <= 1024, "<= 1 KB"))
    for label, result, note in (("burst", burst, "no yield in the producer"),
                                ("paced", paced, "producer yields every 1,000 sends")):
        grown = result["rss_mb"] - result["baseline_rss_mb"]
        per_actor = grown * 1024 * 1024 / n
        print(f"{'RSS, ' + format(n, ',') + ' idle keyed, ' + label:<34} {result['rss_mb']:>12,.1f} MB       "
              f"RSS before {result['baseline_rss_mb']:>14,.1f}  +{grown:,.1f} MB = {per_actor:,.0f} B/actor  "
              f"[{verdict(result['rss_mb'] < 256, '< 256 MB')}; {note}; {result['peak_tasks']:,} tasks pending at peak]",
              flush=True)
    line("  first message to a cold key", out["keyed_first_msg_us"], "us", out["spawn_limit_us"],
         limit_label="task spawn", target=f"burst: {out['keyed_first_msg_us_burst']:.1f} us incl. settle")
    print(f"idle keyed actors holding a task: {out['keyed_idle_tasks']}", flush=True)

    out["bench_seconds"] = perf() - began
    print(f"total {out['bench_seconds']:.1f} s", flush=True)
    print(json.dumps({key: round(value, 4) if isinstance(value, float) else value for key, value in out.items()}))


if __name__ == "__main__":
    main()
