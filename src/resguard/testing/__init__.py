"""Test doubles for code that uses resguard: no root, no real memory pressure needed.

- :class:`ManualClock` moves only when told to; pass it as ``clock=`` to a Guard, Monitor,
  Sampler, Profile, cache or rule to test timing without sleeping.
- :func:`make_snapshot` builds a :class:`~resguard.Snapshot` at any memory pressure.
- :class:`KernelTree` writes a re-rooted ``/proc`` and cgroup tree (:class:`Roots`) for a
  real :class:`~resguard.snapshot.Sampler` to read.
"""

from __future__ import annotations

from resguard._modules.clock import ManualClock
from resguard._probes.paths import Roots
from resguard.testing.kernel import KernelTree
from resguard.testing.monitor import StaticMonitor
from resguard.testing.snapshots import WALL_OFFSET_S, make_container, make_process, make_snapshot

__all__ = [
    "WALL_OFFSET_S",
    "KernelTree",
    "ManualClock",
    "Roots",
    "StaticMonitor",
    "make_container",
    "make_process",
    "make_snapshot",
]
