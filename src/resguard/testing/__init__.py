"""Test doubles for code that uses resguard: no root, no real memory pressure needed.

- :class:`ManualClock` moves only when told to; pass it as ``clock=`` to a Guard, Monitor,
  Sampler, Profile, cache or rule to test timing without sleeping.
- :func:`make_snapshot` builds a :class:`~resguard.Snapshot` at any memory pressure;
  :func:`unknown_memory` one whose memory could not be read.
- :class:`StaticMonitor` is a Monitor whose snapshot the test sets, judged by the real
  policy: a Guard or the ASGI middleware on top of it refuses at 97 % as it would on a
  full machine.
- :class:`KernelTree` writes a re-rooted ``/proc`` and cgroup tree (:class:`Roots`) for a
  real :class:`~resguard.snapshot.Sampler` to read.
- :func:`use_backend` runs a block on one sensing backend (``"linux"`` or ``"psutil"``),
  as ``RESGUARD_BACKEND`` would for the whole process.
- :class:`FakeNVML` is an NVML double (``Sampler(nvml=FakeNVML(devices=[FakeGpu(...)]))``):
  GPUs, a missing driver, a failing query or a hung driver on a machine without a GPU.
- :mod:`resguard.testing.ollama` is an Ollama stand-in server on loopback
  (``python -m resguard.testing.ollama --port N`` from a shell).

Nothing in resguard imports this package; ``import resguard`` does not load it.
"""

from __future__ import annotations

from resguard._modules.clock import ManualClock
from resguard.snapshot import Roots
from resguard.testing.backend import use_backend
from resguard.testing.kernel import KernelTree
from resguard.testing.monitor import StaticMonitor
from resguard.testing.nvml import FakeGpu, FakeNVML
from resguard.testing.snapshots import (
    MEMINFO_EMPTY,
    WALL_OFFSET_S,
    make_container,
    make_process,
    make_snapshot,
    unknown_memory,
)

__all__ = [
    "MEMINFO_EMPTY",
    "WALL_OFFSET_S",
    "FakeGpu",
    "FakeNVML",
    "KernelTree",
    "ManualClock",
    "Roots",
    "StaticMonitor",
    "make_container",
    "make_process",
    "make_snapshot",
    "unknown_memory",
    "use_backend",
]

# The public path, for reprs, pickles and the API reference (autodoc documents a module's
# own classes only): the clock lives in a private module every layer can import.
ManualClock.__module__ = __name__
