"""A lazy model's claim, decided without I/O: use it, load it, wait for it, or why not.

:func:`claim` is the whole decision a caller of ``get()``/``with model`` makes each time it
looks at the model; it reads no clock (the time is an argument), takes no lock and never
waits. The thread and the task faces in :mod:`resguard.models._lazy` keep only the
waiting (through :class:`resguard._modules.waiter.Waiter`) and the loading.
"""

from __future__ import annotations

import enum

from resguard._errors import InvalidState, ResourceExhausted
from resguard._modules.waiter import Waiter

__all__ = ["Attempt", "Claim", "Claimant", "Owner", "claim", "reentered_error", "timed_out_error"]

Owner = tuple[str, int]
"""Who runs a load: ``("thread", ident)`` or ``("task", id)``."""


class Claim(enum.Enum):
    """What a caller does next with a lazy model."""

    READY = "ready"
    """Loaded: use it (and take the pin when asked)."""
    LOAD = "load"
    """Nobody is loading it: this caller runs the load."""
    WAIT = "wait"
    """Another caller is loading it: wait for that load to end, then claim again."""
    FAILED = "failed"
    """The load this caller waited for failed: raise its error."""
    REENTERED = "reentered"
    """The caller is the loader itself: waiting would wait for its own load."""
    TIMED_OUT = "timed_out"
    """Another caller is still loading it and this caller's ``wait`` is over."""


class Attempt:
    """One load in progress: who runs it, who waits for it, and how it ended."""

    __slots__ = ("abandoned", "done", "failure", "owner", "waiters")

    def __init__(self, owner: Owner) -> None:
        self.owner = owner  # the thread or task running the loader
        self.done = False
        self.failure: Exception | None = None  # set when the load raised an Exception
        self.abandoned = False  # the caller that started it was cancelled
        self.waiters: list[Waiter] = []  # woken when it ends


class Claimant:
    """One caller of ``get()``/``with model``: who it is, whether it pins, when it stops
    waiting (a clock reading), the load it last waited for and its waiter (made when it
    first has to wait)."""

    __slots__ = ("deadline_s", "me", "pin", "waited", "waiter")

    def __init__(self, me: Owner, pin: bool, deadline_s: float) -> None:
        self.me = me
        self.pin = pin
        self.deadline_s = deadline_s
        self.waited: Attempt | None = None
        self.waiter: Waiter | None = None

    def waiting(self) -> Waiter:
        """The caller's waiter (made at its first wait: a ready model needs none)."""
        if self.waiter is None:
            self.waiter = Waiter()
        return self.waiter


def claim(
    loaded: bool,
    attempt: Attempt | None,
    me: Owner,
    waited: Attempt | None,
    now_s: float,
    deadline_s: float,
) -> Claim:
    """The next step of caller *me*, given the model's state.

    *loaded*: whether the model holds its value; *attempt*: the load in progress, if any;
    *waited*: the load this caller last waited for (``None`` on its first look); *now_s*
    and *deadline_s*: clock readings, the caller gives up waiting at *deadline_s*.
    A load that ended by cancellation (no failure) is not an error for its waiters: they
    claim again and one of them loads.
    """
    if waited is not None and waited.done and waited.failure is not None:
        return Claim.FAILED
    if loaded:
        return Claim.READY
    if attempt is None:
        return Claim.LOAD
    if attempt.owner == me:
        return Claim.REENTERED
    if now_s >= deadline_s:
        return Claim.TIMED_OUT
    return Claim.WAIT


def reentered_error(name: str) -> InvalidState:
    """The error for :attr:`Claim.REENTERED`."""
    return InvalidState(
        f"the loader of model {name!r} uses the model itself; "
        "it would wait for its own load (load it without the model)"
    )


def timed_out_error(name: str, waited_s: float, wait_s: float) -> ResourceExhausted:
    """The error for :attr:`Claim.TIMED_OUT`."""
    return ResourceExhausted(
        f"model {name!r} is still loading after waiting {waited_s:.3g} s (wait={wait_s:g} s)",
        reason="timeout",
        retry_after=5.0,
        numbers={"wait_s": wait_s},
    )
