"""Where the kernel's files are; re-rootable so tests can point probes at fixture trees.

Only the linux sensing backend reads them: a ``Sampler`` or ``ProcessTable`` given other
roots reads through the linux backend whatever the default is."""

from __future__ import annotations

import attrs

__all__ = ["DEFAULT_ROOTS", "Roots"]


@attrs.frozen
class Roots:
    """Mount points of procfs and the cgroup filesystem (``/proc``, ``/sys/fs/cgroup``):
    ``Sampler(roots=Roots(proc=..., cgroup=...))`` reads a fixture tree instead (see
    :class:`resguard.testing.KernelTree`), on the linux backend (``backend="psutil"``
    with other roots is refused)."""

    proc: str = "/proc"
    cgroup: str = "/sys/fs/cgroup"


DEFAULT_ROOTS = Roots()
