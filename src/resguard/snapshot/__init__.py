"""Snapshots: immutable values describing memory, CPU, pressure and this process.

A :class:`Snapshot` is built by a :class:`Sampler` and does no I/O afterwards. The sampler
reads through a sensing backend (:data:`BACKENDS`): ``linux``, the kernel's files, or
``psutil``, every platform psutil supports; :func:`default_backend` says which one a
sampler not told otherwise uses. Memory numbers are *effective*: inside a container or a
cgroup the limit is the cgroup's, not the host's (see :class:`MemoryInfo`). All sizes
are bytes, times are seconds, percentages run from 0 to 100; each numeric field says
which in its attrs metadata (:func:`metric_unit`).

The package keeps one job per module: ``_values`` (the records and their units),
``_limits`` (memory against the effective limit, decided alike for both backends),
``_cpu`` (CPU percentages from time counters), ``_slow`` (values read at most every
half second), ``_linux`` (the kernel readers), ``_portable`` (the psutil readers),
``_sampler`` (the :class:`Sampler` façade that picks one) and ``_heat`` (temperatures,
fans and macOS's thermal state: :class:`HeatReader`, :func:`read_heat`).
"""

from __future__ import annotations

import sys
import types

from resguard._modules.defaults import made_once
from resguard._probes.backend import BACKENDS, Backend, checked_backend, default_backend
from resguard._probes.files import FaultKind
from resguard._probes.paths import Roots
from resguard._probes.reporting import RELOG_AFTER_S as RELOG_AFTER_S  # internal, not in __all__
from resguard._probes.reporting import SENSING_FAULTS as SENSING_FAULTS
from resguard.snapshot._gpu import GpuReader
from resguard.snapshot._heat import HeatReader
from resguard.snapshot._limits import LIMITS_MAX_AGE_S as LIMITS_MAX_AGE_S
from resguard.snapshot._limits import invalidate_limits
from resguard.snapshot._sampler import SLOW_FILES_MAX_AGE_S as SLOW_FILES_MAX_AGE_S
from resguard.snapshot._sampler import Sampler
from resguard.snapshot._values import (
    FAULT_KINDS,
    UNITS,
    ContainersInfo,
    ContainersMemory,
    ContainerStats,
    CpuInfo,
    FanSpeed,
    Fault,
    GpuInfo,
    GpuMemory,
    GpuProcess,
    GpuSummary,
    HeatInfo,
    MemoryInfo,
    OllamaModelInfo,
    PressureInfo,
    PressureLine,
    ProcessInfo,
    ProcessSelf,
    ResourcePressure,
    Snapshot,
    SwapInfo,
    TemperatureSensor,
    gpu_percent,
    metric_paths,
    metric_unit,
    ollama_processor,
)

__all__ = [
    "BACKENDS",
    "FAULT_KINDS",
    "UNITS",
    "Backend",
    "ContainerStats",
    "ContainersInfo",
    "ContainersMemory",
    "CpuInfo",
    "FanSpeed",
    "Fault",
    "FaultKind",
    "GpuInfo",
    "GpuMemory",
    "GpuProcess",
    "GpuReader",
    "GpuSummary",
    "HeatInfo",
    "HeatReader",
    "MemoryInfo",
    "OllamaModelInfo",
    "PressureInfo",
    "PressureLine",
    "ProcessInfo",
    "ProcessSelf",
    "ResourcePressure",
    "Roots",
    "Sampler",
    "Snapshot",
    "SwapInfo",
    "TemperatureSensor",
    "default_backend",
    "default_sampler",
    "gpu_percent",
    "invalidate_limits",
    "metric_paths",
    "metric_unit",
    "ollama_processor",
    "read_gpus",
    "read_heat",
    "snapshot",
]

for _public in (
    ContainerStats,
    ContainersInfo,
    ContainersMemory,
    CpuInfo,
    FanSpeed,
    Fault,
    GpuInfo,
    GpuMemory,
    GpuProcess,
    GpuReader,
    GpuSummary,
    HeatInfo,
    MemoryInfo,
    OllamaModelInfo,
    PressureInfo,
    PressureLine,
    ProcessInfo,
    ProcessSelf,
    ResourcePressure,
    Roots,
    Sampler,
    Snapshot,
    SwapInfo,
    TemperatureSensor,
    FanSpeed,
    HeatInfo,
    HeatReader,
    gpu_percent,
    invalidate_limits,
    metric_paths,
    metric_unit,
    ollama_processor,
):
    _public.__module__ = __name__  # reprs, pickles and the API docs name the public module
del _public

_default_samplers: dict[str, Sampler] = {}  # one per backend: the default may change
_default_heat: dict[str, HeatReader] = {}
_default_gpus: dict[str, GpuReader] = {}


def read_gpus(*, nvml: object = None) -> tuple[GpuInfo, ...] | None:
    """This machine's NVIDIA GPUs now (NVML), ``()`` when NVML says there are none and
    ``None`` when it cannot tell (no driver, a reading that hung): a one-shot for scripts.
    Without the ``gpu`` extra it raises ImportError naming ``pip install 'resguard[gpu]'``
    (:func:`snapshot` then just has ``gpus=None``). *nvml* replaces ``pynvml`` (e.g.
    :class:`resguard.testing.FakeNVML`). See :doc:`gpu`."""
    if nvml is not None:
        return GpuReader(nvml).read()
    return made_once(_default_gpus, "pynvml", GpuReader).read()


def default_sampler() -> Sampler:
    """The process-wide sampler behind :func:`snapshot`, on :func:`default_backend` (one
    per backend, made at first use)."""
    backend = default_backend()
    return made_once(_default_samplers, backend, lambda: Sampler(backend=backend))


def read_heat(*, backend: Backend | None = None) -> HeatInfo | None:
    """This machine's temperatures, fans and (macOS) thermal state now, or ``None`` when
    the OS gives none (a VM, a container without ``/sys/class/hwmon``): a one-shot for
    scripts and ``resguard snapshot``. One :class:`HeatReader` per backend (default
    :func:`default_backend`) is kept, so a damaged sensor is warned about once, not on
    every call. A Monitor fills ``Snapshot.heat`` itself (``Monitor(heat=True)``)."""
    chosen = checked_backend(backend)
    return made_once(_default_heat, chosen, lambda: HeatReader(backend=chosen)).read()


def snapshot(*, uss: bool = False, children: bool = True) -> Snapshot:
    """Take a :class:`Snapshot` of this machine, its cgroup limits and this process."""
    return default_sampler().sample(uss=uss, children=children)


class _CallableModule(types.ModuleType):
    """Makes ``resguard.snapshot()`` work whether the package attribute names this module
    or the function: importing a submodule rebinds the package attribute to the module."""

    def __call__(self, *, uss: bool = False, children: bool = True) -> Snapshot:
        return snapshot(uss=uss, children=children)


sys.modules[__name__].__class__ = _CallableModule
