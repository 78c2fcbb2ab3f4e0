"""Leases that survive a Redis outage: every lease is also a lock of the fallback (PostgreSQL session advisory
locks, or in-process leases on SQLite, where there is one process), which alone decides who holds it.

    acquire: fallback first (exclusion across processes, freed at once if the holder's process dies), then
             Redis; Redis down -> the fallback's answer stands (degraded, never a crash); Redis says another
             owner holds it -> the fallback lock is given back and the answer is no
    renew:   the fallback decides; Redis is renewed (or taken again after it came back empty) best effort
    release: both; Redis down -> the fallback's release is enough

So Redis being down changes nothing about who holds what, and its return needs nothing done.
"""

from __future__ import annotations

from typing import Protocol, cast

from .._errors import StoreError
from .._protocol import Store
from ._common import Lifecycle, check_key, check_ttl
from ._errors import CoordinationUnavailable
from ._local import LocalLeases
from ._protocol import Leases

__all__ = ["AdvisoryLeases", "FallbackLeases", "LockSource", "leases_with_fallback"]


class HeldLockLike(Protocol):
    @property
    def held(self) -> bool: ...

    async def alive(self) -> bool: ...

    async def release(self) -> None: ...


class LockSource(Protocol):
    """What ``PostgresStore`` offers: ``try_lock(name)`` -> a held lock, or None when another session has it."""

    async def try_lock(self, name: str) -> HeldLockLike | None: ...


class AdvisoryLeases:
    """``Leases`` over PostgreSQL session advisory locks: held until released or the holder's connection dies
    (the ttl is not needed for crash safety; a crashed process's session ends with it)."""

    def __init__(self, locks: LockSource) -> None:
        self._locks = locks
        self._held: dict[str, tuple[str, HeldLockLike]] = {}

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        check_ttl(name, owner, ttl)
        current = self._held.get(name)
        if current is not None:
            if await self._alive(current[1]):
                return current[0] == owner
            del self._held[name]
            await current[1].release()  # its session died: give the connection back
        try:
            lock = await self._locks.try_lock(name)
        except StoreError as exc:
            raise CoordinationUnavailable(f"advisory lock unavailable: {exc}") from exc
        if lock is None:
            return False
        self._held[name] = (owner, lock)
        return True

    async def renew(self, name: str, owner: str, ttl: float) -> bool:
        check_ttl(name, owner, ttl)
        current = self._held.get(name)
        if current is None or current[0] != owner:
            return False
        return await self._alive(current[1])

    @staticmethod
    async def _alive(lock: HeldLockLike) -> bool:
        return lock.held and await lock.alive()

    async def release(self, name: str, owner: str) -> bool:
        check_key("name", name)
        check_key("owner", owner)
        current = self._held.get(name)
        if current is None or current[0] != owner:
            return False
        del self._held[name]
        was_held = current[1].held
        await current[1].release()
        return was_held


class FallbackLeases:
    """Redis leases backed by a fallback that alone decides (see the module docstring)."""

    def __init__(self, primary: Leases, fallback: Leases) -> None:
        self._primary = primary
        self._fallback = fallback

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        if not await self._fallback.acquire(name, owner, ttl):
            return False
        try:
            if await self._primary.acquire(name, owner, ttl):
                return True
        except CoordinationUnavailable:
            return True  # degraded: the fallback's lock is the lease
        await self._fallback.release(name, owner)  # someone holds it on Redis alone
        return False

    async def renew(self, name: str, owner: str, ttl: float) -> bool:
        if not await self._fallback.renew(name, owner, ttl):
            return False
        try:
            if not await self._primary.renew(name, owner, ttl):
                await self._primary.acquire(name, owner, ttl)  # Redis came back empty: take it again
        except CoordinationUnavailable:
            pass
        return True

    async def release(self, name: str, owner: str) -> bool:
        released = await self._fallback.release(name, owner)
        try:
            await self._primary.release(name, owner)
        except CoordinationUnavailable:
            pass
        return released


def leases_with_fallback(primary: Leases, store: Store, *, sweep_interval: float = 60.0) -> Leases:
    """``primary`` (Redis leases) backed by the store: PostgreSQL session advisory locks, or in-process
    leases on SQLite (one process). Without Redis (``primary`` in-process), PostgreSQL's advisory locks alone:
    in-process leases would let every process sharing the database hold the same lease."""
    if isinstance(primary, LocalLeases):
        return AdvisoryLeases(cast(LockSource, store)) if store.backend == "postgresql" else primary
    if store.backend == "postgresql":
        return FallbackLeases(primary, AdvisoryLeases(cast(LockSource, store)))
    return FallbackLeases(primary, LocalLeases(Lifecycle(), sweep_interval))
