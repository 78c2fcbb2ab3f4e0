"""The public entry point: pick the implementation from the URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import NoReturn

from kernel import Dependency

from ._config import CoordinationConfig
from ._local import open_local_coordination
from ._protocol import Coordination
from ._redis import open_redis_coordination

__all__ = ["open_coordination"]


@asynccontextmanager
async def open_coordination(
    redis_url: str | None, *, config: CoordinationConfig, dependency: Dependency | None = None
) -> AsyncIterator[Coordination]:
    """Open the coordination backend: Redis at ``redis_url``, in-process when it is None/"".
    With ``dependency`` (``Breakers["redis"]``) every Redis operation goes through its breaker, and the
    idempotent ones are retried per its policy, each retry counted (``vigil_retry_attempts_total``); without
    it, ``config.redis.retries`` quick retries and no breaker.

    Redis is pinged before the body runs, so a dead or wrong URL raises
    CoordinationUnavailable here instead of on first use.
    """
    body_error: BaseException | None = None
    try:
        async with _open(redis_url, config, dependency) as coordination:
            try:
                yield coordination
            except BaseException as exc:
                body_error = exc
                raise
    except BaseExceptionGroup as group:
        # Our nursery and trio-asyncio's wrap whatever crosses them in groups (and
        # trio-asyncio re-derives them, so identity of groups is lost; leaves keep it).
        # A caller expects its own exception back, even a group of its own making, and
        # ours bare when there is just one.
        leaves = _leaves(group)
        if body_error is not None and _ids(leaves) == _ids(_leaves(body_error)):
            _reraise(body_error)
        if len(leaves) == 1:
            _reraise(leaves[0])
        raise


def _open(redis_url: str | None, config: CoordinationConfig,
          dependency: Dependency | None) -> AbstractAsyncContextManager[Coordination]:
    if redis_url:
        return open_redis_coordination(redis_url, config, dependency)
    return open_local_coordination(config)


def _leaves(exc: BaseException) -> list[BaseException]:
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]


def _ids(excs: list[BaseException]) -> set[int]:
    return {id(exc) for exc in excs}


def _reraise(exc: BaseException) -> NoReturn:
    # Keep the leaf's own __context__ instead of chaining it to the discarded group.
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context
