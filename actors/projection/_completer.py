"""The outbox completer: records what the dispatcher's in-memory work came to, beside the dispatcher's rounds.

When every handler has reported on an event it holds, the dispatcher owes the store two things: the checkpoints
of work that could not finish in memory, and the event's completion. It sends them here (``Finish``) instead of
writing them in its next claim, so claiming and completing run side by side on two connections: the claim
round, the one serial step of dispatch, stays a single statement. Messages that queue while a transaction runs
are written together by the next one. If a write fails, the events stay leased to this process, nobody renews
them any more, and they are redelivered when their leases lapse (handlers recompute, so that is only repeated
work).
"""

from __future__ import annotations

import logging
from typing import Any

from kernel import Actor
from storage import CheckpointIn, Store, StoreError

from ._messages import Finish

log = logging.getLogger("vigil.projection")

_CHUNK = 5_000  # rows per statement, under the store's batch limit


class OutboxCompleter(Actor):
    max_batch = 64

    def __init__(self, *, store: Store, owner: str) -> None:
        self.store = store
        self.owner = owner
        self.completed = 0

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        to_store: list[CheckpointIn] = []
        to_complete: list[int] = []
        for msg in messages:
            if isinstance(msg, Finish):
                to_store.extend(msg.store)
                to_complete.extend(msg.complete)
            else:
                log.error("outbox completer: unexpected message %r", msg)
        if to_store or to_complete:
            await self._write(to_store, to_complete)
        return [None] * len(messages)

    async def _write(self, to_store: list[CheckpointIn], to_complete: list[int]) -> None:
        try:
            async with self.store.transaction() as tx:
                # The checkpoints first: an event is complete only once all its remaining work is stored.
                await tx.commit(*(tx.checkpoints.create_many(to_store[i:i + _CHUNK])
                                  for i in range(0, len(to_store), _CHUNK)),
                                *(tx.outbox.complete_many(self.owner, to_complete[i:i + _CHUNK])
                                  for i in range(0, len(to_complete), _CHUNK)))
        except StoreError as exc:
            log.warning("outbox completer: could not complete %d events (%d checkpoints); they are redelivered "
                        "when their leases lapse: %s", len(to_complete), len(to_store), exc)
            return
        self.completed += len(to_complete)


__all__ = ["OutboxCompleter"]
