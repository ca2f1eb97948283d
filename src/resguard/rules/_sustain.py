"""The sustain / hysteresis / cooldown state machine, written once for every rule."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from resguard._errors import InvalidType, InvalidValue
from resguard.rules._verdict import Breach, Level, Offender, since_wall
from resguard.units import MAX_SECONDS, shown

if TYPE_CHECKING:
    from resguard.snapshot import Snapshot

__all__ = ["Sustain", "firing_breach"]


def _seconds(value: object, what: str) -> float:
    """*value* as seconds from 0 to :data:`~resguard.units.MAX_SECONDS` (a huge int too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidType(f"{what}={shown(value)} is not a number of seconds")
    if not 0 <= value <= MAX_SECONDS:  # NaN fails the comparison; big ints compare exactly
        raise InvalidValue(
            f"{what}={shown(value)} is not a number of seconds from 0 to {MAX_SECONDS:g}"
        )
    return float(value)


class Sustain:
    """The memory of one sustained condition: pending, firing, cooling down.

    A rule decides two things about each sample and calls :meth:`advance`:

    * *trigger*: the firing condition holds (``metric op value``);
    * *hold*: the clear condition holds (``metric op clear``; true whenever *trigger* is,
      and *trigger* itself when not given: no hysteresis).

    The machine (the semantics of :class:`Threshold`, see :mod:`resguard.rules`):

    * idle → *pending* at the first sample with *trigger*; a sample without it resets it;
    * pending → *firing* once pending for ``for_s`` seconds (``0``: at once) and the
      cooldown has run out; ``firing_since`` is when it became pending;
    * firing stays firing while *hold* holds and clears at the first sample where it does
      not; clearing starts the cooldown (no firing for ``cooldown_s`` seconds).

    ``pending_since`` is when the trigger started holding (``None``: idle),
    ``firing_since`` since when the condition fires (``None``: not firing),
    ``cooldown_until`` the monotonic time before which it cannot fire again.

    It is pure: no clock, no I/O, no lock. *now* (monotonic seconds) is passed in, so a
    test drives it with any times it likes. One object per rule state (not thread-safe).

    A rule outside this package (a budget, a custom rule) uses it as its state::

        from resguard.rules import Breach, Sustain

        def new_state(self):
            return Sustain(for_s=self.for_s, cooldown_s=self.cooldown_s)

        def step(self, snapshot, state, now):
            used = ...                                   # the figure judged
            if not state.advance(now, used > self.max_bytes, hold=used > self.clear_bytes):
                return None
            since = state.firing_since                   # not None while firing
            return Breach(self.name, ..., since, since_wall, now - since, "bytes")

    An unknown sample (a figure that could not be measured) is best no call at all: it is
    no evidence either way. ``last_value``/``last_threshold`` are free for the rule to keep
    the last figures of a firing condition in (:class:`Threshold` repeats them while its
    metric is unknown).
    """

    __slots__ = (
        "cooldown_s",
        "cooldown_until",
        "firing_since",
        "for_s",
        "last_threshold",
        "last_value",
        "pending_since",
    )

    def __init__(self, for_s: float = 0.0, cooldown_s: float = 0.0) -> None:
        self.for_s = _seconds(for_s, "for_s")
        self.cooldown_s = _seconds(cooldown_s, "cooldown_s")
        self.pending_since: float | None = None
        self.firing_since: float | None = None
        self.cooldown_until = -math.inf
        self.last_value = 0.0
        self.last_threshold = 0.0

    def __repr__(self) -> str:
        return (
            f"Sustain(pending_since={self.pending_since}, "
            f"firing_since={self.firing_since}, cooldown_until={self.cooldown_until})"
        )

    def advance(self, now: float, trigger: bool, hold: bool | None = None) -> bool:
        """Move by one sample at *now*; return whether the condition fires now."""
        if self.firing_since is not None:
            if trigger if hold is None else hold:
                return True
            self.firing_since = None
            self.pending_since = None
            self.cooldown_until = now + self.cooldown_s
            return False
        if not trigger:
            self.pending_since = None
            return False
        pending = self.pending_since
        if pending is None:
            self.pending_since = pending = now
        if now - pending >= self.for_s and now >= self.cooldown_until:
            self.firing_since = pending
            return True
        return False


class _Judging(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def level(self) -> Level: ...


def firing_breach(
    rule: _Judging,
    state: Sustain,
    snapshot: Snapshot,
    now: float,
    op: str,
    unit: str,
    offenders: Callable[[float], tuple[Offender, ...]] | None = None,
) -> Breach | None:
    """*rule*'s breach while *state* fires (``None`` while it does not), from the figures
    last kept in it (``last_value`` against ``last_threshold``), held since it began;
    *offenders* names the culprits given that start."""
    since = state.firing_since
    if since is None:
        return None
    return Breach(
        rule.name,
        rule.metric,
        op,
        state.last_value,
        state.last_threshold,
        rule.level,
        since,
        since_wall(snapshot, since),
        now - since,
        unit,
        () if offenders is None else offenders(since),
    )
