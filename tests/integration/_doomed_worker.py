"""A projection worker process that takes work and hangs mid-unit, for the lease-recovery test to SIGKILL.

    python tests/integration/_doomed_worker.py DSN SCHEMA LEASE_SECONDS

Prints ``holding`` once its handler runs work (events its dispatcher holds — by a lease, or on PostgreSQL by the row
locks of an open transaction — while the handler runs them in memory), then hangs there (its heartbeats keep the
hold alive until the process dies).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio  # noqa: E402
import trio_asyncio  # noqa: E402

from actors.projection import DispatcherConfig, HandlerConfig, ProjectionConfig, ProjectionDomain, UserWork  # noqa: E402
from kernel import ActorSystem, Supervisor  # noqa: E402
from storage import StoreConfig, Transaction, open_store  # noqa: E402


class Hang:
    name = "recording"
    depends_on = None

    def subscribes(self, event_type: str) -> bool:
        return True

    async def project(self, tx: Transaction, work: UserWork) -> None:
        print("holding", flush=True)
        await trio.sleep_forever()


async def main(dsn: str, schema: str, lease: float) -> None:
    config = ProjectionConfig(dispatcher=DispatcherConfig(batch=50, poll_interval=0.05, lease_seconds=lease),
                              handler=HandlerConfig(batch=50, poll_interval=0.05, lease_seconds=lease, timeout=3600),
                              figures_interval=None)
    async with trio_asyncio.open_loop(), open_store(dsn, config=StoreConfig(pg_schema=schema, pg_max_size=4)) as store:
        domain = ProjectionDomain(store, config, projections=[Hang()], owner="doomed")
        async with ActorSystem.start(Supervisor("root", children=[domain.subtree()])):
            await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
