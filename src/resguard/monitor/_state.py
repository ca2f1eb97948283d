"""What the Monitor publishes (:class:`State`) and what its slow loop samples (:class:`Source`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.render import ValueMixin
from resguard.rules import Level, Verdict
from resguard.snapshot import Snapshot
from resguard.units import shown

__all__ = ["Source", "State", "Subscriber", "monotonic_now"]


class Source(Protocol):
    """Something the slow loop samples: ``sample()`` returns snapshot fields to merge,
    e.g. ``{"containers": ContainersInfo}``; a failing source is logged once."""

    @property
    def name(self) -> str: ...

    def sample(self) -> dict[str, Any]: ...


@attrs.frozen
class State(ValueMixin):
    """What the monitor last saw and concluded; ``sequence`` counts samples from 1."""

    snapshot: Snapshot
    verdict: Verdict
    sequence: int

    @property
    def level(self) -> Level:
        return self.verdict.level

    def age_s(self, now: float | None = None) -> float:
        """Seconds since this state's snapshot was taken, at monotonic time *now* (default
        :func:`time.monotonic`, the clock of the snapshots); never negative."""
        now = time.monotonic() if now is None else monotonic_now(now)
        return max(now - self.snapshot.monotonic, 0.0)

    def _repr_html_(self) -> str:
        """The verdict, then the snapshot grouped as a notebook shows one."""
        import html

        head = (
            f"<p>resguard state #{self.sequence}: <b>{self.verdict.level.name}</b>: "
            f"{html.escape(self.verdict.reason)}</p>"
        )
        return head + self.snapshot._repr_html_()


Subscriber = Callable[[State, "State | None"], object]


def monotonic_now(now: object) -> float:
    """*now* as monotonic seconds, or an error naming it (a huge int is no OverflowError)."""
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise InvalidType(
            f"now={shown(now)} is not a monotonic time in seconds; expected e.g. time.monotonic()"
        )
    try:
        seconds = float(now)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise InvalidValue(f"now={shown(now)} is not a finite monotonic time in seconds")
    return seconds
