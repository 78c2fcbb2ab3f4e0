"""What a tree is made of before it runs: ``ChildSpec`` and ``Supervisor``.

Specs are plain validated values; the runtime builds nodes from them when the system starts, so
one spec can start any number of systems.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ._policy import RESTART_TYPES, STRATEGIES, RestartType, Strategy

_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
Overflow = Literal["block", "reject", "drop_oldest"]
OVERFLOWS: tuple[Overflow, ...] = ("block", "reject", "drop_oldest")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid actor name {name!r}: use 1-128 characters of letters, digits and _ . : @ - "
            "('/' separates path segments)"
        )
    return name


def _positive(kind: str, name: str, field_name: str, value: float, *, allow_inf: bool = True) -> None:
    # The message is formatted only on failure: specs are built at every spawn.
    if isinstance(value, (int, float)) and value >= 0 and (allow_inf or value != math.inf):
        return  # NaN fails ``value >= 0``
    what = f"{kind} {name!r}: {field_name}"
    if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be a number >= 0, got {value!r}")
    raise ValueError(f"{what} must be finite, got {value!r}")


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How a supervisor builds, restarts and stops one child (or, with ``keyed``, one per key)."""

    name: str
    factory: Callable[..., Any]
    args: Sequence[Any] = field(default=(), kw_only=True)
    kwargs: Mapping[str, Any] = field(default_factory=dict, kw_only=True)
    restart: RestartType = field(default="permanent", kw_only=True)
    mailbox: int = field(default=1024, kw_only=True)
    overflow: Overflow = field(default="block", kw_only=True)
    shutdown_timeout: float = field(default=5.0, kw_only=True)
    keyed: bool = field(default=False, kw_only=True)
    idle_timeout: float = field(default=300.0, kw_only=True)
    max_live: int = field(default=10_000, kw_only=True)

    def __post_init__(self) -> None:
        check_name(self.name)
        if not callable(self.factory):
            raise TypeError(f"ChildSpec {self.name!r}: factory must be a class or callable, got {self.factory!r}")
        if self.restart not in RESTART_TYPES:
            raise ValueError(f"ChildSpec {self.name!r}: restart must be one of {RESTART_TYPES}, got {self.restart!r}")
        if self.overflow not in OVERFLOWS:
            raise ValueError(f"ChildSpec {self.name!r}: overflow must be one of {OVERFLOWS}, got {self.overflow!r}")
        if not isinstance(self.mailbox, int) or self.mailbox < 1:
            raise ValueError(f"ChildSpec {self.name!r}: mailbox capacity must be an int >= 1, got {self.mailbox!r}")
        if not isinstance(self.max_live, int) or self.max_live < 1:
            raise ValueError(f"ChildSpec {self.name!r}: max_live must be an int >= 1, got {self.max_live!r}")
        _positive("ChildSpec", self.name, "shutdown_timeout", self.shutdown_timeout)
        _positive("ChildSpec", self.name, "idle_timeout", self.idle_timeout)
        # Frozen copies: a spec is shared by every incarnation.
        if type(self.args) is not tuple:
            object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs))


@dataclass(frozen=True, slots=True)
class Supervisor:
    """A supervisor: its children (specs or supervisors), strategy, intensity and backoff."""

    name: str
    children: Sequence[ChildSpec | Supervisor] = field(default=(), kw_only=True)
    strategy: Strategy = field(default="one_for_one", kw_only=True)
    max_restarts: int = field(default=3, kw_only=True)
    within: float = field(default=5.0, kw_only=True)
    base_delay: float = field(default=0.0, kw_only=True)
    max_delay: float = field(default=30.0, kw_only=True)
    reset_after: float = field(default=60.0, kw_only=True)
    restart: RestartType = field(default="permanent", kw_only=True)

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Supervisor {self.name!r}: strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise ValueError(f"Supervisor {self.name!r}: max_restarts must be an int >= 0, got {self.max_restarts!r}")
        if self.restart not in RESTART_TYPES:
            raise ValueError(f"Supervisor {self.name!r}: restart must be one of {RESTART_TYPES}, got {self.restart!r}")
        _positive("Supervisor", self.name, "within", self.within, allow_inf=False)
        if self.within == 0:
            raise ValueError(f"Supervisor {self.name!r}: within must be > 0 (the restart window's length)")
        _positive("Supervisor", self.name, "base_delay", self.base_delay, allow_inf=False)
        _positive("Supervisor", self.name, "max_delay", self.max_delay)
        _positive("Supervisor", self.name, "reset_after", self.reset_after)
        children = tuple(self.children)
        seen: set[str] = set()
        for child in children:
            if not isinstance(child, ChildSpec | Supervisor):
                raise TypeError(f"Supervisor {self.name!r}: a child must be a ChildSpec or a Supervisor, got {child!r}")
            if child.name in seen:
                raise ValueError(f"Supervisor {self.name!r}: two children are named {child.name!r}")
            seen.add(child.name)
        object.__setattr__(self, "children", children)
