"""Units of work: operations and the transaction that batches them.

Crossing into the database thread (SQLite) or the asyncio bridge (PostgreSQL) is what costs,
so a repository call does not run by itself: it returns an :class:`Op`, and the transaction
decides how many ops share one crossing:

    await op                       # run now: one crossing
    a, b = await tx.run(op1, op2)  # run both: one crossing
    tx.defer(op3)                  # run with the next crossing (at the latest, with COMMIT)
    await tx.commit(op4)           # deferred ops + op4 + COMMIT: one crossing
    await tx.commit(tx.script(fn)) # ops that depend on earlier results, decided in between: one crossing

BEGIN rides on the first crossing and COMMIT on the last, so a unit of work whose results
are only needed at the end costs a single crossing. The repositories (``storage._repos``) make
the ops; ``storage._transaction`` hangs them off the transaction; ``storage._store`` opens
transactions and reruns whole units of work.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Callable, Generator
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, overload

import trio

from kernel import retry_call

from ._config import StoreConfig
from ._errors import StoreError, store_retry_decision
from ._sql import Cmd, Dialect, StepsFn

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")
E = TypeVar("E")

End = Literal["commit", "rollback"] | None


class Const(Generic[T]):
    """A step whose result is known without asking the database (e.g. an empty batch)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


Step = Cmd | StepsFn[Any] | Const[Any]


class Op(Generic[T]):
    """One prepared repository call: validated, not yet executed.

    Await it, pass it to ``tx.run``/``tx.commit``, or ``tx.defer`` it. An op that is never
    submitted makes the transaction fail at exit instead of silently dropping a write.
    """

    __slots__ = ("_tx", "on_commit", "post", "step", "submitted")

    def __init__(
        self,
        tx: TransactionBase,
        step: Step,
        post: Callable[[Any], T] | None = None,
        on_commit: Callable[[T], None] | None = None,
    ) -> None:
        self._tx = tx
        self.step = step
        self.post = post  # runs after the crossing on the trio side (inside a script: on the database side)
        self.on_commit = on_commit  # runs on the trio side, after a successful COMMIT
        self.submitted = False
        tx._unsubmitted += 1

    def __await__(self) -> Generator[Any, None, T]:
        return self._tx._run_one(self).__await__()


class TransactionBase(abc.ABC):
    """``async with store.transaction() as tx``: commit on normal exit, roll back on error.

    Any failed statement rolls the whole transaction back at once (a half-applied unit of
    work is never committed); later use raises StoreError, and so does leaving the block
    normally after catching that error (the work must not look committed). The repositories
    hang off the transaction: ``tx.samples``, ``tx.outbox``, ... (see ``storage._transaction``).
    """

    # How the backend's driver wants values, and which statements differ (set by each backend).
    dialect: Dialect
    # PostgreSQL: the channel an enqueue NOTIFYs inside the transaction. None on SQLite,
    # which tells its subscribers in-process, from _notify_outbox, after COMMIT.
    notify_channel: str | None = None

    def __init__(
        self, config: StoreConfig, rng: random.Random, *, readonly: bool, retry_first: bool, urgent: bool,
        on_retry: Callable[[int, float, Exception], None] | None = None,
    ) -> None:
        self.config = config
        self._on_retry = on_retry
        self.readonly = readonly
        # Goes before waiting non-urgent work where the backend has a single writer (SQLite).
        self.urgent = urgent
        self._rng = rng
        self._retry_first = retry_first
        self._state: Literal["idle", "open", "done"] = "idle"
        self._failure: BaseException | None = None  # what rolled the transaction back
        self._busy = False
        self._deferred: list[Op[Any]] = []
        self._unsubmitted = 0
        self._hooks: list[tuple[Callable[[Any], None], Any]] = []

    def _notify_outbox(self, event_id: int) -> None:
        """Called after COMMIT for each newly enqueued outbox event."""
        return  # PostgreSQL needs nothing here: its NOTIFY was part of the transaction

    # --- public ------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._state == "done"

    def now(self) -> datetime:
        """The store's wall clock (``StoreConfig.clock``), checked to be timezone-aware."""
        value = self.config.clock()
        if value.utcoffset() is None:
            raise StoreError("StoreConfig.clock returned a naive datetime")
        return value

    def defer(self, *ops: Op[Any]) -> None:
        """Queue ops to run in front of the next crossing; their errors surface there."""
        self._check_usable()
        self._submit(ops)
        self._deferred.extend(ops)

    def script(self, fn: Callable[[], Generator[Op[Any], Any, T]]) -> Op[T]:
        """One op made of many: ``fn()`` is a generator that yields ops of this transaction and
        receives each one's result, deciding between them what to do next; its return value is
        the op's result. All of it runs in one crossing, on the database side (SQLite's thread,
        PostgreSQL's asyncio loop): the code between the yields must be plain computation —
        no trio, no I/O, no shared state — and may run again when the unit of work is retried.
        The inner ops' commit hooks run on the trio side, after COMMIT, as usual."""
        hooks: list[tuple[Callable[[Any], None], Any]] = []

        def steps() -> Generator[Cmd, Any, T]:
            hooks.clear()  # a rerun (retried first crossing) must not keep a rolled-back run's hooks
            script = fn()
            unsubmitted = self._unsubmitted
            try:
                op = next(script)
                while True:
                    if not isinstance(op, Op):
                        raise StoreError(f"a script yields ops of its transaction, not {op!r}")
                    self._submit((op,))
                    step = op.step
                    if isinstance(step, Cmd):
                        result = yield step
                    elif isinstance(step, Const):
                        result = step.value
                    else:
                        result = yield from step()
                    if op.post is not None:
                        result = op.post(result)
                    if op.on_commit is not None:
                        hooks.append((op.on_commit, result))
                    op = script.send(result)
            except StopIteration as done:
                if self._unsubmitted != unsubmitted:
                    self._unsubmitted = unsubmitted
                    raise StoreError("a script made ops it never yielded") from None
                return done.value  # type: ignore[no-any-return]
            except BaseException:
                # Ops it made and never ran do not outlive it (a retried crossing runs it afresh).
                self._unsubmitted = unsubmitted
                raise
            finally:
                script.close()

        def after_commit(_: Any) -> None:
            for hook, value in hooks:
                hook(value)

        return Op(self, steps, on_commit=after_commit)

    @overload
    async def run(self, a: Op[A], /) -> tuple[A]: ...
    @overload
    async def run(self, a: Op[A], b: Op[B], /) -> tuple[A, B]: ...
    @overload
    async def run(self, a: Op[A], b: Op[B], c: Op[C], /) -> tuple[A, B, C]: ...
    @overload
    async def run(self, a: Op[A], b: Op[B], c: Op[C], d: Op[D], /) -> tuple[A, B, C, D]: ...
    @overload
    async def run(self, a: Op[A], b: Op[B], c: Op[C], d: Op[D], e: Op[E], /) -> tuple[A, B, C, D, E]: ...
    @overload
    async def run(self, *ops: Op[Any]) -> tuple[Any, ...]: ...
    async def run(self, *ops: Op[Any]) -> tuple[Any, ...]:
        """Run the deferred ops and these, in order, in one crossing; return these results."""
        self._check_usable()
        self._submit(ops)
        return tuple(await self._execute(list(ops), None))

    @overload
    async def commit(self) -> tuple[()]: ...
    @overload
    async def commit(self, a: Op[A], /) -> tuple[A]: ...
    @overload
    async def commit(self, a: Op[A], b: Op[B], /) -> tuple[A, B]: ...
    @overload
    async def commit(self, a: Op[A], b: Op[B], c: Op[C], /) -> tuple[A, B, C]: ...
    @overload
    async def commit(self, a: Op[A], b: Op[B], c: Op[C], d: Op[D], /) -> tuple[A, B, C, D]: ...
    @overload
    async def commit(self, *ops: Op[Any]) -> tuple[Any, ...]: ...
    async def commit(self, *ops: Op[Any]) -> tuple[Any, ...]:
        """Run the deferred ops and these, then COMMIT, all in one crossing."""
        self._check_usable()
        self._submit(ops)
        self._check_all_submitted()
        return tuple(await self._execute(list(ops), "commit"))

    async def rollback(self) -> None:
        """Discard everything done so far; the transaction is finished."""
        await self._abort()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            await self._abort()
            return
        if self._failure is not None:
            # The body caught an op's error and carried on: it must not look committed.
            raise StoreError(
                f"the transaction was rolled back by an earlier error: {self._failure!r}"
            ) from self._failure
        if self._state != "done":
            try:
                self._check_all_submitted()
            except StoreError:
                await self._abort()
                raise
            await self._execute([], "commit")

    # --- backend interface --------------------------------------------------------------

    @abc.abstractmethod
    async def _cross(self, ops: list[Op[Any]], *, begin: bool, end: End) -> list[Any]:
        """Run ``ops`` (after BEGIN if ``begin``, then COMMIT/ROLLBACK if ``end``) in one crossing.

        On any exception the backend has rolled back and released what the transaction held
        (writer slot, connection) before raising a translated error.
        """

    # --- machinery ----------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._state == "done":
            raise StoreError("the transaction is finished (committed, rolled back or failed)")

    def _submit(self, ops: tuple[Op[Any], ...]) -> None:
        for op in ops:
            if op._tx is not self:
                raise StoreError("an op can only run in the transaction that created it")
            if op.submitted:
                raise StoreError("an op runs only once")
        for op in ops:
            op.submitted = True
        self._unsubmitted -= len(ops)

    def _check_all_submitted(self) -> None:
        if self._unsubmitted:
            raise StoreError(
                f"{self._unsubmitted} operation(s) were created but never awaited, run or deferred"
            )

    async def _run_one(self, op: Op[T]) -> T:
        self._check_usable()
        self._submit((op,))
        (result,) = await self._execute([op], None)
        return result  # type: ignore[no-any-return]

    async def _execute(self, ops: list[Op[Any]], end: End) -> list[Any]:
        if self._busy:
            raise StoreError("a transaction cannot be used by two tasks at once")
        self._check_usable()
        batch = self._deferred + ops
        self._deferred = []
        if self._state == "idle" and all(isinstance(op.step, Const) for op in batch):
            # Nothing reached the database yet and nothing needs to: no crossing at all.
            results = [op.step.value for op in batch]  # type: ignore[union-attr]
            if end is not None:
                self._state = "done"
        else:
            begin = self._state == "idle"
            self._busy = True
            try:
                results = await self._cross_retrying(batch, begin=begin, end=end)
            except BaseException as exc:
                self._state = "done"
                if end != "rollback":
                    self._failure = exc
                raise
            finally:
                self._busy = False
            self._state = "done" if end is not None else "open"
        for index, op in enumerate(batch):
            if op.post is not None:
                results[index] = op.post(results[index])
            if op.on_commit is not None:
                self._hooks.append((op.on_commit, results[index]))
        if end == "commit":
            hooks, self._hooks = self._hooks, []
            for hook, value in hooks:
                hook(value)
        return results[len(batch) - len(ops) :]

    async def _cross_retrying(self, batch: list[Op[Any]], *, begin: bool, end: End) -> list[Any]:
        # A failed first crossing has been rolled back and the caller has seen none of its results, so it
        # can simply run again. Later crossings cannot: the body already acted on earlier results (that is
        # what Store.transact is for).
        if not (begin and self._retry_first):
            return await self._cross(batch, begin=begin, end=end)
        return await retry_call(lambda: self._cross(batch, begin=begin, end=end), policy=self.config.retry,
                                classify=store_retry_decision, rng=self._rng, on_retry=self._on_retry)

    async def _abort(self) -> None:
        self._deferred = []
        self._hooks = []
        if self._state == "open":
            # Shielded: a cancelled unit of work must still give its connection/writer back.
            with trio.CancelScope(shield=True):
                try:
                    await self._execute([], "rollback")
                except StoreError:
                    pass  # the connection is gone, and with it the transaction
        self._state = "done"
