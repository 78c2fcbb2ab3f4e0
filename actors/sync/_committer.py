"""``Committer``: group commit of the device actors' units of work.

Every write a device actor makes (a push, a pull's acknowledgement, a resolution, a server change) is one
transaction script. Committing each one alone costs an fsync per push (SQLite's single writer; PostgreSQL's
commit), so the device actors hand their scripts here and the committer runs everything queued — up to
``max_batch`` units — in one transaction: first every unit's device lock (sorted), then every user's change-log
lock (sorted), then the units in order. The device locks are only tried (never waited for): a unit whose device
another process is writing right now is answered ``LOCKED_ELSEWHERE`` and its device actor asks again shortly, so
one busy device never holds up the batch. The user locks are taken in sorted order, so two batches (two
processes on PostgreSQL) never deadlock; a device's units still apply in order (its actor waits for each).

A batch that fails for another reason than a transient error is retried unit by unit, so one unit's failure is
that unit's alone.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from kernel import Actor, Failed
from storage import Op, Store, Transaction

Script = Generator[Op[Any], Any, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Unit:
    """One unit of work for the next group commit. Reply: the script's result."""

    user_id: str
    device_id: str | None  # None: no device lock (server changes)
    build: Callable[[Transaction], Callable[[], Script]]


class _LockedElsewhere:
    def __repr__(self) -> str:
        return "LOCKED_ELSEWHERE"


LOCKED_ELSEWHERE: Any = _LockedElsewhere()


def batch_script(tx: Transaction, units: list[Unit]) -> Callable[[], Script]:
    def script() -> Script:
        held = set()
        for user, device in sorted({(u.user_id, u.device_id) for u in units if u.device_id is not None}):
            if (yield tx.devices.try_lock(user, device)):
                held.add((user, device))
        ready = [u.device_id is None or (u.user_id, u.device_id) in held for u in units]
        for user in sorted({u.user_id for u, go in zip(units, ready, strict=True) if go}):
            yield tx.changes.lock_user(user)
        results = []
        for unit, go in zip(units, ready, strict=True):
            results.append((yield from unit.build(tx)()) if go else LOCKED_ELSEWHERE)
        return results

    return script


class Committer(Actor):
    def __init__(self, *, store: Store, max_batch: int) -> None:
        self._store = store
        self.max_batch = max_batch

    async def _commit(self, units: list[Unit]) -> list[Any]:
        async def work(tx: Transaction) -> list[Any]:
            (results,) = await tx.commit(tx.script(batch_script(tx, units)))
            return list(results)

        return await self._store.transact(work)

    async def receive_batch(self, messages: list[Any]) -> list[Any]:
        units = [m for m in messages if isinstance(m, Unit)]
        if len(units) != len(messages):
            raise TypeError("the committer takes Unit messages only")
        try:
            return await self._commit(units)
        except Exception as exc:
            if len(units) == 1:
                return [Failed(exc)]
        answers: list[Any] = []
        for unit in units:
            try:
                answers.extend(await self._commit([unit]))
            except Exception as exc:
                answers.append(Failed(exc))
        return answers


__all__ = ["LOCKED_ELSEWHERE", "Committer", "Unit", "batch_script"]
