"""Pressure stall information (PSI): ``/proc/pressure/*`` or a cgroup v2 ``*.pressure`` file."""

from __future__ import annotations

import re

import attrs

from resguard._modules.render import ValueMixin

__all__ = ["PressureLine", "ResourcePressure", "parse_pressure"]


@attrs.frozen(slots=True)
class PressureLine(ValueMixin):
    """One PSI line: share of wall time stalled (percent) over 10/60/300 s, total in µs."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int



@attrs.frozen(slots=True)
class ResourcePressure(ValueMixin):
    """``some``: at least one task stalled; ``full``: all non-idle tasks stalled (may be absent)."""

    some: PressureLine
    full: PressureLine | None



_LINE = re.compile(
    r"(some|full) avg10=([0-9.]+) avg60=([0-9.]+) avg300=([0-9.]+) total=([0-9]+)")


def parse_pressure(text: str | None) -> ResourcePressure | None:
    """Parse a PSI file's text; ``None`` when it is missing or not in PSI form."""
    if not text:
        return None
    lines = {kind: PressureLine(float(a10), float(a60), float(a300), int(total))
             for kind, a10, a60, a300, total in _LINE.findall(text)}
    some = lines.get("some")
    return None if some is None else ResourcePressure(some, lines.get("full"))
