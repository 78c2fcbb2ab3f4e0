"""A user's account actor (keyed by user id): settings and sample reads, serialized per user.

Reads and settings writes go through the actor tree like everything else, so transport never
touches storage; keying by user spreads users over many small actors that cost nothing while idle.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from kernel import Actor
from storage import HealthSample, Op, Page, Store, UserSettings

from ._messages import GetSettings, PutSettings, QuerySamples

SETTINGS_CHANGED = "user.settings.changed"


def reprojects(before: UserSettings, after: UserSettings) -> bool:
    """Whether a settings change moves the read models (days are local days; overlaps follow the ranking)."""
    return before.timezone != after.timezone or before.source_priority != after.source_priority


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
            case PutSettings(settings=settings, correlation_id=correlation_id):
                return await self._put_settings(settings, correlation_id)
            case QuerySamples():
                return await self._query(msg)
            case _:
                raise TypeError(f"account actor: unexpected message {msg!r}")

    async def _put_settings(self, settings: UserSettings, correlation_id: str | None) -> UserSettings:
        """Store the settings; a new timezone or source priority moves every day and night of the user's read
        models, so the same unit of work announces it (``user.settings.changed``, one watermark change)."""
        user = self.user_id
        async with self.store.transaction() as tx:

            def steps() -> Generator[Op[Any], Any, UserSettings]:
                before: UserSettings = yield tx.users.get_settings(user)
                stored: UserSettings = yield tx.users.put_settings(user, settings)
                if reprojects(before, stored):
                    mark = yield tx.watermarks.bump(user, 1)
                    yield tx.outbox.enqueue(user, SETTINGS_CHANGED,
                                            {"timezone": stored.timezone,
                                             "sourcePriority": list(stored.source_priority),
                                             "watermark": {"from": mark - 1, "to": mark}},
                                            correlation_id=correlation_id)
                return stored

            (result,) = await tx.commit(tx.script(steps))
        return result

    async def _query(self, q: QuerySamples) -> Page[HealthSample]:
        async with self.store.transaction() as tx:
            (page,) = await tx.commit(tx.samples.query(
                self.user_id, metric=q.metric, start=q.start, end=q.end, after=q.after, limit=q.limit,
            ))
        return page
