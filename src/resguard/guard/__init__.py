"""Guards: admit, queue or refuse work by memory, RSS, verdict level and concurrency.

A :class:`Guard` decides on the hot path without I/O: it reads the Monitor's latest state
(one attribute read) or, without a Monitor, a cached snapshot refreshed at most every
*max_age*; with a Monitor, no reservation and no ``max_concurrent`` it takes no lock
either (:attr:`Guard.lock_free`: the GIL makes its few operations atomic). Callers may
declare what they will need (a *reservation*); admission checks
``headroom − reserved_in_flight ≥ reserve`` so that many requests arriving together do not
all see the same free memory and all get in. Refusal raises
:class:`~resguard.ResourceExhausted` with a reason (one of :data:`REFUSAL_REASONS`), the
numbers and ``retry_after``.

A caller given a ``wait`` queues (FIFO) for what other calls hold (a ``max_concurrent``
slot, reserved bytes, its turn) and for memory to free up. A verdict at the guard's
``level`` is load shedding: it is refused at once with reason ``"level"``, never queued
(a queued caller too, as soon as the verdict reaches it). A wait that runs out is refused
with what it waited on: ``"timeout"`` for other calls, the memory's own reason
(``"memory"``, ``"rss"``, ``"vram"``, ``"unknown"``) for memory; ``numbers["waited_s"]``
and ``numbers["cause"]`` say how long it waited and on what.

What the guard cannot know it does not guess: a number the snapshot left ``None`` (a
damaged ``/proc`` file), a Monitor state older than the monitor's ``stale_after`` (its
thread died, the machine stalled) or a verdict with unknowns is *unknown*, and
``on_unknown`` decides: ``"admit"`` (the default; a warning is logged once) checks only
what is still known, ``"refuse"`` refuses with reason ``"unknown"``.

Inside: the decisions are pure functions (``_core``: admit, queue or refuse, the hot
path's budget, breaches, edges), the arguments are checked in ``_args``, the settings
(limits, reservation, monitor, whether to admit lock-free) are ``_settings``, the counts
and readings ``_state``, the :class:`Guard` (``_guard``) admits and does the waiting,
:class:`Admission` is one call with its own reservation, and :func:`limit_self` sets the
process's own rlimit (``_self``).
"""

from __future__ import annotations

from resguard.guard._admission import Admission
from resguard.guard._core import REFUSAL_REASONS
from resguard.guard._guard import Guard
from resguard.guard._self import limit_self
from resguard.guard._state import GuardStats

__all__ = ["REFUSAL_REASONS", "Admission", "Guard", "GuardStats", "limit_self"]

# the public path in reprs, pickles and the API reference, not the private module's
for _public in (Admission, Guard, GuardStats, limit_self):
    _public.__module__ = __name__
del _public

# for the integrations on top (asgi, prometheus), public though not in __all__: the
# argument checks with the guard's wording, and whether a Monitor state can be trusted
from resguard.guard._args import OnBreach as OnBreach  # noqa: E402
from resguard.guard._args import OnUnknown as OnUnknown  # noqa: E402
from resguard.guard._args import Reserve as Reserve  # noqa: E402
from resguard.guard._args import check_duration as check_duration  # noqa: E402
from resguard.guard._args import check_reserve as check_reserve  # noqa: E402
from resguard.guard._core import WAIT_BUCKETS_S as WAIT_BUCKETS_S  # noqa: E402
from resguard.guard._core import state_unknown as state_unknown  # noqa: E402
