"""A user's account actor (keyed by user id): settings and sample reads, serialized per user.

Reads and settings writes go through the actor tree like everything else, so transport never
touches storage; keying by user spreads users over many small actors that cost nothing while idle.
"""

from __future__ import annotations

from typing import Any

from kernel import Actor
from storage import HealthSample, Page, Store

from ._messages import GetSettings, PutSettings, QuerySamples


class Account(Actor):
    def __init__(self, user_id: str, *, store: Store) -> None:
        self.user_id = user_id
        self.store = store

    async def receive(self, msg: Any) -> Any:
        match msg:
            case GetSettings():
                # Read through, never cached: another instance (PostgreSQL, several processes) may
                # have changed them, and the lanes enforce what the database says.
                async with self.store.transaction() as tx:
                    (settings,) = await tx.commit(tx.users.get_settings(self.user_id))
                return settings
            case PutSettings(settings=settings):
                async with self.store.transaction() as tx:
                    (stored,) = await tx.commit(tx.users.put_settings(self.user_id, settings))
                return stored
            case QuerySamples():
                return await self._query(msg)
            case _:
                raise TypeError(f"account actor: unexpected message {msg!r}")

    async def _query(self, q: QuerySamples) -> Page[HealthSample]:
        async with self.store.transaction() as tx:
            (page,) = await tx.commit(tx.samples.query(
                self.user_id, metric=q.metric, start=q.start, end=q.end, after=q.after, limit=q.limit,
            ))
        return page
