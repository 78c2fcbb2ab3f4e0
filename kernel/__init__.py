"""Vigil's kernel: supervised actors on trio.

Actors own bounded mailboxes and run under supervisors with OTP restart strategies, restart
intensity and jittered exponential backoff. Every delay, timeout and timestamp comes from trio's
clock, so ``trio.testing.MockClock`` drives the whole system deterministically. See KERNEL.md.
"""

from . import testing
from ._actor import Actor
from ._breaker import (
    BreakerConfig,
    BreakerEvent,
    BreakerSnapshot,
    BreakerState,
    BreakerStateName,
    CircuitBreaker,
    CircuitOpen,
    breaker_step,
)
from ._cell import Failed, InjectedCrash, Terminated
from ._errors import (
    ActorCrashed,
    ActorStopped,
    AskTimeout,
    KernelError,
    MailboxFull,
    NoSuchActor,
    SupervisorGaveUp,
)
from ._policy import (
    RestartDecision,
    RestartLimits,
    backoff_delay,
    consecutive_restarts,
    decide_restart,
    prune_window,
    record_restart,
    restart_group,
    should_restart,
)
from ._refs import DEFAULT_ASK_TIMEOUT, ActorRef, EntityRef, KeyedRef
from ._retry import (
    NO_RETRY,
    Classify,
    RetryAfter,
    RetryDecision,
    RetryPolicy,
    http_status_decision,
    parse_retry_after,
    retry_call,
    retry_delay,
)
from ._snapshot import FailureSnapshot, MailboxStatistics, NodeSnapshot
from ._spec import ChildSpec, Supervisor
from ._system import ActorSystem, DeadLetter, DeadLetters
from ._telemetry import (
    Crashed,
    DeadLettered,
    GaveUp,
    MailboxOverflow,
    Restarted,
    Started,
    Stopped,
    Subscription,
    Telemetry,
    TelemetryEvent,
)
from ._timers import Timer

__all__ = [
    "NO_RETRY",
    "Classify",
    "RetryAfter",
    "RetryDecision",
    "RetryPolicy",
    "http_status_decision",
    "parse_retry_after",
    "retry_call",
    "retry_delay",
    "DEFAULT_ASK_TIMEOUT",
    "Actor",
    "ActorCrashed",
    "ActorRef",
    "ActorStopped",
    "ActorSystem",
    "BreakerConfig",
    "BreakerEvent",
    "BreakerSnapshot",
    "BreakerState",
    "BreakerStateName",
    "ChildSpec",
    "CircuitBreaker",
    "CircuitOpen",
    "AskTimeout",
    "Crashed",
    "DeadLetter",
    "DeadLettered",
    "DeadLetters",
    "EntityRef",
    "Failed",
    "FailureSnapshot",
    "GaveUp",
    "InjectedCrash",
    "KernelError",
    "KeyedRef",
    "MailboxFull",
    "MailboxOverflow",
    "MailboxStatistics",
    "NoSuchActor",
    "NodeSnapshot",
    "RestartDecision",
    "RestartLimits",
    "Restarted",
    "Started",
    "Stopped",
    "Subscription",
    "Supervisor",
    "SupervisorGaveUp",
    "Telemetry",
    "TelemetryEvent",
    "Terminated",
    "Timer",
    "testing",
    "backoff_delay",
    "breaker_step",
    "consecutive_restarts",
    "decide_restart",
    "prune_window",
    "record_restart",
    "restart_group",
    "should_restart",
]
