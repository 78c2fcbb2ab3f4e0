"""What every repository shares: its transaction, the dialect, and the argument checks.

A repository method checks its arguments on the spot (InvalidData before anything runs) and
returns an :class:`~storage._tx.Op` made of the statements beside it in its module; the
transaction decides when it runs (see :mod:`storage._tx`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from .. import _validate as v
from .._config import Limits
from .._sql import Dialect
from .._tx import Op, Step, TransactionBase

__all__ = ["Repo", "Row"]

T = TypeVar("T")


class Row(Protocol):
    """A result row: ``sqlite3.Row`` or ``asyncpg.Record``, both indexed by column name."""

    def __getitem__(self, column: str, /) -> Any: ...


class Repo:
    """The base of every repository: ops of one transaction, and the checks they all use."""

    __slots__ = ("_d", "_limits", "_tx")

    def __init__(self, tx: TransactionBase) -> None:
        self._tx = tx
        self._d: Dialect = tx.dialect
        self._limits: Limits = tx.config.limits

    def _op(
        self,
        step: Step,
        post: Callable[[Any], T] | None = None,
        on_commit: Callable[[T], None] | None = None,
    ) -> Op[T]:
        return Op(self._tx, step, post, on_commit)

    def _now(self) -> datetime:
        return self._tx.now()

    def _id(self, field: str, value: object) -> str:
        return v.text(field, value, self._limits.max_id_chars)

    def _name(self, field: str, value: object) -> str:
        return v.text(field, value, self._limits.max_name_chars)

    def _json(self, field: str, value: object) -> str:
        return v.dump_json(field, value, self._limits.max_json_chars)

    def _result_json(self, field: str, value: object) -> str:
        """A request's stored answer: bounded by ``Limits.max_result_chars``, not the document limit."""
        return v.dump_json(field, value, self._limits.max_result_chars)

    def _error(self, value: object) -> str:
        return v.error_text(value, self._limits.max_error_chars)

    def _limit(self, value: object) -> int:
        return v.positive_limit("limit", value, self._limits.max_batch_rows)

    def _retry_plan(self, retryable: bool) -> Callable[[int], tuple[bool, Any, Any]]:
        """For a ``fail``: given the attempts made, (dead?, when the next attempt is due, now), the
        times in the driver's form. The outbox policy's jittered backoff; the jitter is drawn
        here, when the op is made, so the schedule follows the store's seed."""
        policy = self._tx.config.outbox
        now_dt = self._now()
        draw = self._tx._rng.random()

        def plan(attempts: int) -> tuple[bool, Any, Any]:
            due = now_dt + timedelta(seconds=policy.delay(attempts, draw))
            return not retryable or attempts >= policy.max_attempts, self._d.ts(due), self._d.ts(now_dt)

        return plan

    def _older_than(self, seconds: object) -> Any:
        """The driver's form of now minus ``seconds`` (a cut-off for purges and reapers)."""
        return self._d.ts(self._now() - timedelta(seconds=v.seconds("older_than_seconds", seconds)))
