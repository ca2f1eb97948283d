"""The :class:`Sampler`: one façade over the sensing backends, ``linux`` (the kernel's
files, ``_linux``) and ``psutil`` (portable, ``_portable``), chosen once per sampler."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, SupportsIndex

import attrs

from resguard._errors import InvalidType, InvalidValue
from resguard._probes import cgroup as _cgroup
from resguard._probes.backend import Backend, backend_for
from resguard._probes.paths import DEFAULT_ROOTS, Roots
from resguard.snapshot._gpu import gpu_reader
from resguard.snapshot._limits import LIMITS_MAX_AGE_S
from resguard.snapshot._linux import LinuxSampler
from resguard.snapshot._values import MemoryInfo, Snapshot
from resguard.units import shown

if TYPE_CHECKING:
    from resguard._modules.clock import Clock
    from resguard.snapshot._portable import PsutilSampler

__all__ = ["SLOW_FILES_MAX_AGE_S", "Sampler"]

SLOW_FILES_MAX_AGE_S = 0.5
"""How stale PSI, load averages and the macOS pressure level may be; the kernel updates
PSI every 2 s and load averages every 5 s."""


class _Reader(Protocol):
    """What a backend gives the façade."""

    @property
    def location(self) -> _cgroup.CgroupLocation | None: ...

    def sample(self, *, uss: bool = False, children: bool = True) -> Snapshot: ...

    def limit_without_rlimit(self, memory: MemoryInfo, rlimit: str) -> int | None: ...


class Sampler:
    """Builds snapshots of this machine, cheaply and repeatedly.

    *backend* chooses where the numbers come from: ``"linux"`` reads the kernel's files
    (``/proc``, cgroup v1/v2, PSI: fast and container-aware), ``"psutil"`` asks psutil
    (every platform psutil supports, host-wide numbers; on macOS also the kernel's memory
    pressure level). ``None`` (the default) takes ``"linux"`` when *roots* or *cgroup*
    is given (they only mean something to the kernel readers), else
    :func:`resguard.snapshot.default_backend`: ``RESGUARD_BACKEND`` when set, else linux
    on Linux and psutil elsewhere. See :doc:`platforms` for which field comes from
    where on each.

    It keeps what it needs between samples (the files' descriptors, this process's
    cgroup, the previous CPU counters: CPU percentages need no sleep). One sampler may be
    shared by threads. *roots* re-roots ``/proc`` and ``/sys/fs/cgroup`` for tests.
    *cgroup* names a cgroup directory to judge memory by instead of this process's own
    (e.g. a worker's cgroup watched from outside); the ``process`` part stays this process.
    Limits (the cgroup limit, rlimits, the CPU quota) are re-read at most every
    *limits_max_age_s* (default one second, or at once after :func:`invalidate_limits`),
    PSI, load averages and the macOS pressure level at most every *slow_files_max_age_s*
    (half a second); usage is read on every sample. *clock* (monotonic seconds, default
    :func:`time.monotonic`) times all of that and gives ``Snapshot.monotonic``;
    *wall_clock* (default :func:`time.time`) gives ``Snapshot.taken_at``.

    *gpus* says whether ``Snapshot.gpus`` is read (NVIDIA GPUs through NVML, the ``gpu``
    extra; at most every *slow_files_max_age_s*): ``None`` (the default) reads them when
    ``pynvml`` imports and the sampler reads this machine (default *roots*), ``True``
    always (an ImportError naming ``pip install 'resguard[gpu]'`` without the extra),
    ``False`` never. *nvml* replaces ``pynvml`` with a module-like object of NVML's
    functions (:class:`resguard.testing.FakeNVML` in tests). See :doc:`gpu`.

    :meth:`sample` never raises because of what it reads: a file or psutil call that is
    missing, empty, cut short, unparseable, unreadable or gone leaves its numbers ``None``
    (or another source fills in), the snapshot's ``faults`` say which, and one warning is
    logged per source and kind of damage (and one when it recovers), not one per sample.
    """

    def __init__(
        self,
        roots: Roots = DEFAULT_ROOTS,
        *,
        backend: Backend | None = None,
        cgroup: str | os.PathLike[str] | None = None,
        limits_max_age_s: float = LIMITS_MAX_AGE_S,
        slow_files_max_age_s: float = SLOW_FILES_MAX_AGE_S,
        clock: Clock = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        gpus: bool | None = None,
        nvml: Any = None,
    ) -> None:
        if not isinstance(roots, Roots):
            raise InvalidType(
                f"roots={shown(roots)} is not a Roots; expected "
                "resguard.snapshot.Roots(proc=..., cgroup=...)"
            )
        chosen = backend_for(
            backend, {"roots": roots if roots != DEFAULT_ROOTS else None, "cgroup": cgroup}
        )
        cgroup_dir = _checked_cgroup(cgroup, roots)
        _check_seconds("limits_max_age_s", limits_max_age_s)
        _check_seconds("slow_files_max_age_s", slow_files_max_age_s)
        if clock is not time.monotonic or wall_clock is not time.time:
            from resguard._modules.clockcheck import checked_clock  # off the default path

            clock = checked_clock(clock)
            wall_clock = checked_clock(wall_clock, "wall_clock")
        reader: _Reader
        if chosen == "linux":
            reader = LinuxSampler(
                roots,
                cgroup_dir,
                limits_max_age_s=limits_max_age_s,
                slow_files_max_age_s=slow_files_max_age_s,
                clock=clock,
                wall_clock=wall_clock,
            )
        else:
            reader = _portable_sampler()(
                limits_max_age_s=limits_max_age_s,
                slow_files_max_age_s=slow_files_max_age_s,
                clock=clock,
                wall_clock=wall_clock,
            )
        if gpus is not None and not isinstance(gpus, bool):
            raise InvalidType(f"gpus={shown(gpus)} is not a bool; expected True, False or None")
        if gpus is None and nvml is None and roots != DEFAULT_ROOTS:
            gpus = False  # re-rooted kernel files are a test's machine: not this one's GPUs
        self._gpus = gpu_reader(gpus, nvml, slow_files_max_age_s)
        self._backend: Backend = chosen
        self._impl = reader
        self._roots = roots

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise InvalidType(
            f"a Sampler ({self._backend} backend) cannot be pickled or deep-copied: it holds "
            "open file descriptors, locks and its previous CPU readings, which mean nothing "
            "in another process; make a new Sampler(...) there (or for the copy)"
        )

    def __deepcopy__(self, memo: object) -> NoReturn:
        self.__reduce_ex__(4)

    def __copy__(self) -> Sampler:
        """A second façade over the same readers (they may be shared by threads)."""
        copied = object.__new__(type(self))
        copied.__dict__.update(self.__dict__)
        return copied

    @property
    def backend(self) -> Backend:
        """Where this sampler's numbers come from: ``"linux"`` or ``"psutil"``."""
        return self._backend

    @property
    def roots(self) -> Roots:
        """Where this sampler reads the kernel's files (``/proc``, the cgroup mount), as
        given (the psutil backend reads through psutil, under the default ones)."""
        return self._roots

    @property
    def location(self) -> _cgroup.CgroupLocation | None:
        """Where this process's cgroups are (``None`` without cgroups, and always on the
        psutil backend)."""
        return self._impl.location

    def sample(self, *, uss: bool = False, children: bool = True) -> Snapshot:
        """Take a snapshot. ``uss=True`` adds the process's unique set size (reads smaps,
        milliseconds); ``children=False`` skips summing descendants' RSS (then
        ``children_rss`` is ``None``: not measured)."""
        snap = self._impl.sample(uss=uss, children=children)
        if self._gpus is None:
            return snap
        gpus = self._gpus.read(snap.monotonic)
        return snap if gpus is None else attrs.evolve(snap, gpus=gpus)

    def limit_without_rlimit(self, rlimit: str) -> int | None:
        """The effective memory limit as if this process's soft *rlimit* (``"RLIMIT_DATA"``
        or ``"RLIMIT_AS"``) were not set, ``None`` when unknown: what ``limit_self("80%")``
        takes a share of, so that setting it again does not compound."""
        memory = self.sample(children=False).memory
        return self._impl.limit_without_rlimit(memory, rlimit)


def _portable_sampler() -> type[PsutilSampler]:
    """The psutil backend's reader class, or an ImportError naming psutil and the fix."""
    try:
        import psutil  # noqa: F401  # the reader imports it when made: fail here, clearly

        from resguard.snapshot._portable import PsutilSampler
    except ImportError as error:
        if error.name != "psutil":
            raise
        raise ImportError(
            f"the psutil sensing backend needs psutil, which cannot be imported ({error}); "
            "install it (pip install psutil), or choose the linux backend on Linux "
            "(RESGUARD_BACKEND=linux)",
            name="psutil",
        ) from error
    return PsutilSampler


def _checked_cgroup(cgroup: object, roots: Roots) -> str | None:
    """The cgroup directory given to :class:`Sampler` as a ``str`` (``None``: this
    process's own); a cgroup that is not one fails now, not on a sample, and so does any
    off Linux (where there are none) unless *roots* re-root the kernel's files (a
    :class:`~resguard.testing.KernelTree` works everywhere)."""
    if cgroup is None:
        return None
    if not isinstance(cgroup, (str, os.PathLike)):
        raise InvalidType(
            f"cgroup={shown(cgroup)} is not a path; expected a cgroup "
            "directory as a string, or None for this process's own"
        )
    path = os.fspath(cgroup)
    if not isinstance(path, str):
        raise InvalidType(f"cgroup={shown(cgroup)} is not a text path; expected a str")
    if not sys.platform.startswith("linux") and roots == DEFAULT_ROOTS:
        raise InvalidValue(
            f"cgroup={shown(cgroup)}: cgroups are not available on this platform "
            f"({sys.platform}); leave cgroup= out to judge this machine's memory"
        )
    _cgroup.location_of(path, roots)  # InvalidValue
    return path


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidType(f"{name}={shown(value)} is not a number of seconds; expected e.g. 1.0")
    if not 0 <= value < float("inf"):
        raise InvalidValue(f"{name}={shown(value)} must be a finite number of seconds >= 0")
