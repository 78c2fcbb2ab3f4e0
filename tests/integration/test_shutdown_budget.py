"""The shutdown budget (VIGIL_SHUTDOWN_TIMEOUT): a real ``run.py serve`` under upload load, with a client that
never finishes its request body (it would hold a plain drain open for the whole drain timeout), gets SIGTERM and
exits 0 inside the budget; every upload that got 200 is in the database afterwards."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.ingest_helpers import headers, running_server, sample, signed
from transport import ShutdownBudget

BUDGET = 6.0  # seconds; the drain timeout (10 s) alone would overrun it
PER_REQUEST = 20


def test_the_budget_is_split_so_the_phases_cannot_overrun_it() -> None:
    default = ShutdownBudget.split(25.0, 10.0)
    assert (default.drain, default.close) == (10.0, 5.0)
    assert default.for_actors(elapsed=10.0) == 10.0 and default.for_actors(elapsed=1.0) == 19.0
    tight = ShutdownBudget.split(BUDGET, 10.0)
    assert tight.drain + tight.for_actors(elapsed=tight.drain) + tight.close == pytest.approx(BUDGET)
    assert tight.drain < 10.0 and tight.for_actors(elapsed=BUDGET) == 0.0
    assert ShutdownBudget.split(25.0, 0.0).drain == 0.0
    with pytest.raises(ValueError):
        ShutdownBudget.split(0.0, 1.0)


async def stuck_request(port: int, started: trio.Event) -> None:
    """A request whose body never finishes arriving: in flight until the server gives up on it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        auth = headers("slow")["Authorization"]
        await stream.send_all((f"POST /v1/health/samples/batch-upsert HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}"
                               "\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"requestId\":"
                               ).encode())
        started.set()
        try:
            while await stream.receive_some(4096):
                pass
        except trio.BrokenResourceError:
            pass


@pytest.mark.slow
async def test_sigterm_under_load_exits_0_inside_the_budget(tmp_path: Path) -> None:
    acked: dict[str, tuple[str, dict[str, Any]]] = {}
    warmed_up, stuck = trio.Event(), trio.Event()
    async with running_server(tmp_path, env={"VIGIL_SHUTDOWN_TIMEOUT": str(BUDGET)}) as server:

        async def client(n: int) -> None:
            user = f"load-{n}"
            async with httpx.AsyncClient(base_url=server.base, timeout=30) as c:
                while True:
                    rid = str(uuid.uuid4())
                    body = signed([sample(f"{rid}:{i}", start=f"2026-11-24T08:{i:02d}:00Z") for i in range(PER_REQUEST)],
                                  lane=("hot", "cold", "change")[n % 3], request_id=rid)
                    try:
                        r = await c.post("/v1/health/samples/batch-upsert", json=body, headers=headers(user))
                    except httpx.TransportError:
                        return
                    if r.status_code == 200:
                        acked[rid] = (user, r.json())
                        if len(acked) >= 15:
                            warmed_up.set()
                    elif r.status_code == 503:
                        return  # SHUTTING_DOWN
                    else:
                        assert r.status_code == 429, r.text

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stuck_request, server.port, stuck)
            for n in range(3):
                nursery.start_soon(client, n)
            with trio.fail_after(30):
                await warmed_up.wait()
                await stuck.wait()
            signalled = trio.current_time()
            server.process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                code = await server.process.wait()
            took = trio.current_time() - signalled
            nursery.cancel_scope.cancel()
    log = server.log_text()
    assert code == 0, log[-4000:]
    assert took < BUDGET, (took, log[-4000:])
    assert '"msg":"stopped"' in log and "overran" not in log
    for rid, (user, out) in acked.items():
        assert out["inserted"] == PER_REQUEST
        row = server.db.request(user, rid)
        assert row is not None and row["status"] == "completed", rid
        assert server.db.scalar("SELECT count(*) FROM health_samples WHERE user_id = ? AND source_record_id LIKE ?",
                                user, f"{rid}:%") == PER_REQUEST
