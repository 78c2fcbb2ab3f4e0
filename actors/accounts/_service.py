"""The accounts domain's wiring and its facade.

    accounts (keyed by user id)   Account: settings and sample reads, serialized per user

:class:`AccountsDomain` makes the keyed child's spec; ``domain.service(system)`` gives the
:class:`AccountsService` the HTTP layer calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from zoneinfo import available_timezones

from actors.ingest import REGISTRY
from kernel import ActorSystem, ChildSpec, KeyedRef
from storage import HealthSample, InvalidData, Page, SampleCursor, Store, UserSettings

from ._account import Account
from ._errors import InvalidCursor, InvalidSettings
from ._messages import GetSettings, PutSettings, QuerySamples


@cache
def known_timezones() -> frozenset[str]:
    """IANA zone names a user may choose (the ones this machine's tz database has)."""
    return frozenset(available_timezones())


def settings_problems(settings: UserSettings) -> dict[str, str]:
    """What is wrong with ``settings`` (empty: nothing): pure, for the facade and for tests."""
    problems: dict[str, str] = {}
    if settings.timezone not in known_timezones():
        problems["timezone"] = f"unknown IANA time zone {settings.timezone!r}"
    unknown = sorted(set(settings.blocked_metrics) - set(REGISTRY))
    if unknown:
        problems["blockedMetrics"] = f"unknown metrics {unknown}; known: {sorted(REGISTRY)}"
    return problems


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountsConfig:
    idle_timeout: float = 300.0  # an account actor with no message for this long is passivated
    max_live: int = 10_000
    mailbox: int = 256
    ask_timeout: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplePage:
    items: tuple[HealthSample, ...]
    next_cursor: str | None  # opaque; pass it back for the next page


class AccountsDomain:
    name = "accounts"

    def __init__(self, store: Store, config: AccountsConfig | None = None) -> None:
        self.store = store
        self.config = config or AccountsConfig()

    def child_spec(self) -> ChildSpec:
        cfg = self.config
        return ChildSpec(self.name, Account, kwargs={"store": self.store}, keyed=True,
                         idle_timeout=cfg.idle_timeout, max_live=cfg.max_live, mailbox=cfg.mailbox)

    def service(self, system: ActorSystem, *, under: str = "root") -> AccountsService:
        ref = system.ref(f"{under}/{self.name}")
        if not isinstance(ref, KeyedRef):
            raise TypeError(f"{ref.path!r} is not the keyed accounts child this domain builds")
        return AccountsService(ref, self.config)


class AccountsService:
    """Settings and sample reads of one user at a time."""

    def __init__(self, accounts: KeyedRef, config: AccountsConfig) -> None:
        self._accounts = accounts
        self._timeout = config.ask_timeout

    async def get_settings(self, user_id: str) -> UserSettings:
        settings = await self._accounts.key(user_id).ask(GetSettings(), timeout=self._timeout)
        assert isinstance(settings, UserSettings)
        return settings

    async def put_settings(self, user_id: str, settings: UserSettings, *,
                           correlation_id: str | None = None) -> UserSettings:
        """Replace the settings; a new timezone or source priority recomputes the user's read models."""
        problems = settings_problems(settings)
        if problems:
            raise InvalidSettings(problems)
        stored = await self._accounts.key(user_id).ask(PutSettings(settings=settings, correlation_id=correlation_id), timeout=self._timeout)
        assert isinstance(stored, UserSettings)
        return stored

    async def query_samples(self, user_id: str, *, metric: str | None = None, start: datetime | None = None,
                            end: datetime | None = None, cursor: str | None = None,
                            limit: int = 100) -> SamplePage:
        """The user's live samples, oldest first, a page at a time."""
        after = None
        if cursor is not None:
            try:
                after = SampleCursor.decode(cursor)
            except InvalidData:
                raise InvalidCursor() from None
        page = await self._accounts.key(user_id).ask(
            QuerySamples(metric=metric, start=start, end=end, after=after, limit=limit), timeout=self._timeout)
        assert isinstance(page, Page)
        return SamplePage(items=tuple(page.items),
                          next_cursor=page.next_cursor.encode() if page.next_cursor is not None else None)


__all__ = ["AccountsConfig", "AccountsDomain", "AccountsService", "SamplePage", "known_timezones",
           "settings_problems"]
