"""What both backends' stores share: the transaction factory and the retrying unit of work."""

from __future__ import annotations

import abc
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, TypeVar

from kernel import CircuitBreaker, Dependency, RetryPolicy, retry_call

from ._config import StoreConfig
from ._errors import StoreError, store_retry_decision
from ._model import PreparedSamples, SampleIn
from ._repos import SamplePreparer
from ._transaction import Transaction

__all__ = ["StoreBase"]

T = TypeVar("T")


class StoreBase(abc.ABC):
    """What both backends share: the transaction factory and the retrying unit of work."""

    backend: Literal["sqlite", "postgresql"]

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._closed = False
        # The dependency's breaker and retry counter (kernel.Breakers), when the application passed one:
        # PostgreSQL's crossings go through the breaker; retries are counted for /metrics.
        self.dependency: Dependency | None = None

    @property
    def breaker(self) -> CircuitBreaker | None:
        return self.dependency.breaker if self.dependency is not None else None

    def count_retry(self, retry: int, delay: float, error: Exception) -> None:
        """``on_retry`` of the store's retries (transact and a transaction's first crossing)."""
        if self.dependency is not None:
            self.dependency.count_retry(retry, delay, error)

    @abc.abstractmethod
    def _new_transaction(self, *, readonly: bool, retry_first: bool, urgent: bool) -> Transaction: ...

    def prepare_samples(self, rows: Sequence[SampleIn]) -> PreparedSamples:
        """Check and convert ``rows`` for ``tx.samples.upsert_many`` now, outside any unit of work
        (no I/O): a writer that prepares before it queues keeps that work off the write path.
        Raises InvalidData exactly as ``upsert_many`` would."""
        return self.preparer.prepare_samples(rows)

    @property
    def preparer(self) -> SamplePreparer:
        """``prepare_samples`` as plain data, for another process to run."""
        return SamplePreparer(self.backend, self.config.limits)

    def transaction(self, *, readonly: bool = False, urgent: bool = False) -> Transaction:
        """A unit of work: ``async with store.transaction() as tx: ...``.

        A transient failure of its first crossing (nothing observed yet) is retried per
        ``config.retry``; later ones raise, with everything rolled back. ``urgent`` work goes
        before waiting non-urgent work where the backend has a single writer (SQLite).
        """
        if self._closed:
            raise StoreError("the store is closed")
        return self._new_transaction(readonly=readonly, retry_first=True, urgent=urgent)

    async def transact(
        self,
        work: Callable[[Transaction], Awaitable[T]],
        *,
        readonly: bool = False,
        retry: RetryPolicy | None = None,
        urgent: bool = False,
    ) -> T:
        """Run ``await work(tx)`` in a transaction and commit; on a transient error (e.g.
        serialization failure, lost connection, busy database) roll back and run the whole
        unit of work again, with jittered exponential backoff via ``trio.sleep``.

        ``work`` may run several times, so it must not have side effects outside the store.
        """

        async def once() -> T:
            if self._closed:
                raise StoreError("the store is closed")
            async with self._new_transaction(readonly=readonly, retry_first=False, urgent=urgent) as tx:
                return await work(tx)

        return await retry_call(once, policy=retry or self.config.retry, classify=store_retry_decision,
                                rng=self._rng, on_retry=self.count_retry)
