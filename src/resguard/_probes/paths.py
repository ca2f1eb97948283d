"""Where the kernel's files are; re-rootable so tests can point probes at fixture trees."""

from __future__ import annotations

import attrs

__all__ = ["DEFAULT_ROOTS", "Roots"]


@attrs.frozen
class Roots:
    """Mount points of procfs and the cgroup filesystem (``/proc``, ``/sys/fs/cgroup``):
    ``Sampler(roots=Roots(proc=..., cgroup=...))`` reads a fixture tree instead (see
    :class:`resguard.testing.KernelTree`)."""

    proc: str = "/proc"
    cgroup: str = "/sys/fs/cgroup"


DEFAULT_ROOTS = Roots()
