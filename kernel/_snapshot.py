"""Typed, read-only views of the running tree: what ``ref.statistics()`` and ``system.tree()`` return.

Plain values with the kernel's own (snake_case) names and times on trio's clock; rendering them for
a wire format (JSON, Prometheus) is the reader's business, not the kernel's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxStatistics:
    """A mailbox at one instant, like trio's ``statistics()`` objects.

    ``depth`` counts queued messages (not the one being handled), ``capacity`` is how many it holds
    and ``blocked_senders`` how many senders wait for room (policy ``block``). A keyed group's
    figures are its keys' totals, with ``capacity`` the one every key's mailbox has.
    """

    depth: int
    capacity: int
    blocked_senders: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureSnapshot:
    """The last exception that crashed a node; ``at`` is trio's clock."""

    type: str
    message: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSnapshot:
    """One node of ``system.tree()``: an actor, a supervisor, a keyed group or one key's actor.

    The fields that apply to one kind only are None elsewhere: ``strategy`` (supervisors), ``live``,
    ``max_live``, ``passivated`` and ``children_truncated`` (keyed groups, whose ``children`` are the
    most recently used keys only), ``key`` (one key's actor).
    """

    name: str
    path: str
    kind: str  # "actor" | "supervisor" | "keyed"
    state: str
    restarts: int
    crashes: int
    last_failure: FailureSnapshot | None
    mailbox: MailboxStatistics | None
    processed: int
    dead_letters: int
    children: tuple[NodeSnapshot, ...] = ()
    strategy: str | None = None
    live: int | None = None
    max_live: int | None = None
    passivated: int | None = None
    children_truncated: bool | None = None
    key: str | None = None
