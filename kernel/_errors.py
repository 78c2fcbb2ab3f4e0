"""The kernel's errors.

    KernelError
     ├── MailboxFull        a send found the mailbox full (policy ``reject``, a nowait send, or an ask
     │                      dropped by ``drop_oldest``)
     ├── AskTimeout         no reply within the ask's timeout (also a ``TimeoutError``)
     ├── ActorCrashed       the actor crashed while handling this ask; ``__cause__`` is the exception
     ├── ActorStopped       the actor stopped for good (or was stopped) before answering
     ├── NoSuchActor        a path that names no actor
     └── SupervisorGaveUp   restart intensity exceeded: the supervisor stopped its children and failed
"""

from __future__ import annotations


class KernelError(Exception):
    """Base of every error the kernel raises on purpose."""


class MailboxFull(KernelError):
    def __init__(self, path: str, capacity: int) -> None:
        super().__init__(f"mailbox of {path!r} is full ({capacity} queued)")
        self.path = path
        self.capacity = capacity


class AskTimeout(KernelError, TimeoutError):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__(f"no reply from {path!r} within {timeout:g} s")
        self.path = path
        self.timeout = timeout


class ActorCrashed(KernelError):
    def __init__(self, path: str, error: BaseException) -> None:
        super().__init__(f"{path!r} crashed handling this message: {type(error).__name__}: {error}")
        self.path = path
        self.error = error


class ActorStopped(KernelError):
    def __init__(self, path: str, detail: str = "it has stopped") -> None:
        super().__init__(f"{path!r} cannot take messages: {detail}")
        self.path = path


class NoSuchActor(KernelError, LookupError):
    def __init__(self, path: str, detail: str = "") -> None:
        super().__init__(f"no actor at {path!r}" + (f": {detail}" if detail else ""))
        self.path = path


class SupervisorGaveUp(KernelError):
    def __init__(self, path: str, restarts: int, within: float, last_error: BaseException | None) -> None:
        cause = f"; last failure {type(last_error).__name__}: {last_error}" if last_error else ""
        super().__init__(f"supervisor {path!r} gave up: more than {restarts} restarts within {within:g} s{cause}")
        self.path = path
        self.last_error = last_error
