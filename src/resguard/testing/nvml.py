"""An NVML double: GPUs for code that reads them, on a machine without any.

:class:`FakeNVML` has the functions of ``pynvml`` that resguard calls, answering from
:class:`FakeGpu` records the test changes as it goes::

    from resguard.snapshot import Sampler
    from resguard.testing import FakeGpu, FakeNVML

    nvml = FakeNVML(devices=[FakeGpu(memory_total_bytes=24 << 30, memory_used_bytes=6 << 30)])
    sampler = Sampler(nvml=nvml)
    nvml.devices[0].memory_used_bytes = 23 << 30  # the next reading sees it

:func:`make_gpu` builds a :class:`~resguard.snapshot.GpuInfo` at any fill for a
snapshot (``attrs.evolve(make_snapshot(), gpus=(make_gpu(used_percent=95),))``).

``FakeNVML(init_error="DriverNotLoaded")`` is a machine whose driver is missing,
:meth:`FakeNVML.fail` breaks one query, :meth:`FakeNVML.hang` makes every call block (a
wedged driver) until :meth:`FakeNVML.release`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import attrs

from resguard._errors import InvalidValue
from resguard.snapshot import GpuInfo, GpuProcess

__all__ = [
    "NVML_TEMPERATURE_GPU",
    "FakeGpu",
    "FakeNVML",
    "NVMLError",
    "NVMLError_DriverNotLoaded",
    "NVMLError_GpuIsLost",
    "NVMLError_LibraryNotFound",
    "NVMLError_NotSupported",
    "NVMLError_Unknown",
    "make_gpu",
]

NVML_TEMPERATURE_GPU = 0


class NVMLError(Exception):
    """NVML's error (as ``pynvml.NVMLError``); each kind is a subclass named as pynvml's."""


class NVMLError_LibraryNotFound(NVMLError):
    pass


class NVMLError_DriverNotLoaded(NVMLError):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


class NVMLError_GpuIsLost(NVMLError):
    pass


class NVMLError_Unknown(NVMLError):
    pass


_ERRORS: dict[str, type[NVMLError]] = {
    cls.__name__.removeprefix("NVMLError_"): cls
    for cls in (
        NVMLError_LibraryNotFound,
        NVMLError_DriverNotLoaded,
        NVMLError_NotSupported,
        NVMLError_GpuIsLost,
        NVMLError_Unknown,
    )
}


@attrs.define
class FakeGpu:
    """One pretend GPU; change its fields between readings. ``processes`` are
    ``(pid, used_bytes)`` pairs (``used_bytes`` ``None``: NVML does not say);
    ``temperature_celsius=None`` is a board without the sensor (NotSupported)."""

    name: str = "NVIDIA Fake GPU"
    memory_total_bytes: int = 16 << 30
    memory_used_bytes: int = 0
    utilization_percent: int = 0
    temperature_celsius: int | None = 40
    processes: list[tuple[int, int | None]] = attrs.Factory(list)
    uuid: str = ""


def make_gpu(
    index: int = 0,
    *,
    used_percent: float = 25.0,
    total_bytes: int = 16 << 30,
    utilization_percent: float | None = 10.0,
    temperature_celsius: float | None = 45.0,
    processes: Iterable[tuple[int, int | None]] = (),
) -> GpuInfo:
    """A :class:`~resguard.snapshot.GpuInfo` with *used_percent* of *total_bytes* used."""
    used = int(total_bytes * used_percent / 100)
    return GpuInfo(
        index,
        "NVIDIA Fake GPU",
        f"GPU-fake-{index:04d}",
        total_bytes,
        used,
        total_bytes - used,
        utilization_percent,
        temperature_celsius,
        tuple(GpuProcess(pid, used_bytes) for pid, used_bytes in processes),
    )


def _error(kind: str) -> NVMLError:
    cls = _ERRORS.get(kind)
    if cls is None:
        raise InvalidValue(f"unknown NVML error {kind!r}; expected one of {sorted(_ERRORS)}")
    return cls(kind)


class FakeNVML:
    """A module-like object with the ``pynvml`` functions resguard calls; pass it as
    ``nvml=`` (:class:`~resguard.snapshot.Sampler`, :func:`resguard.snapshot.read_gpus`).
    *init_error* (``"LibraryNotFound"``, ``"DriverNotLoaded"``) makes ``nvmlInit`` fail.
    ``init_calls``/``shutdown_calls`` count what resguard did."""

    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVMLError = NVMLError
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_Unknown = NVMLError_Unknown

    def __init__(self, devices: Iterable[FakeGpu] = (), *, init_error: str | None = None) -> None:
        self.devices = list(devices)
        for index, device in enumerate(self.devices):
            if not device.uuid:
                device.uuid = f"GPU-fake-{index:04d}"
        self.init_error = init_error
        self.init_calls = 0
        self.shutdown_calls = 0
        self.calls = 0
        self._failing: dict[str, str] = {}
        self._running = threading.Event()
        self._running.set()
        self.blocked = threading.Event()
        """Set once a call is blocked by :meth:`hang` (a test waits for it before it counts
        ``calls``: a reading's thread may not have reached NVML yet)."""

    def fail(self, query: str, kind: str = "Unknown") -> None:
        """Make *query* (``"memory"``, ``"utilization"``, ``"temperature"``, ``"name"``,
        ``"uuid"``, ``"processes"``, ``"count"``, ``"handle"``) raise NVML's *kind* error."""
        _error(kind)
        self._failing[query] = kind

    def heal(self) -> None:
        """Every query answers again."""
        self._failing.clear()

    def hang(self) -> None:
        """Every call blocks (a wedged driver) until :meth:`release`; :attr:`blocked` is
        set when one does."""
        self.blocked.clear()
        self._running.clear()

    def release(self) -> None:
        self._running.set()

    def _call(self, query: str) -> None:
        self.calls += 1
        if not self._running.is_set():
            self.blocked.set()
        self._running.wait()
        kind = self._failing.get(query)
        if kind is not None:
            raise _error(kind)

    def nvmlInit(self) -> None:
        self._call("init")
        self.init_calls += 1
        if self.init_error is not None:
            raise _error(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1

    def nvmlDeviceGetCount(self) -> int:
        self._call("count")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._call("handle")
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str:
        self._call("name")
        return handle.name

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        self._call("uuid")
        return handle.uuid

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> Any:
        self._call("memory")
        used = handle.memory_used_bytes
        return SimpleNamespace(
            total=handle.memory_total_bytes, used=used, free=handle.memory_total_bytes - used
        )

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> Any:
        self._call("utilization")
        return SimpleNamespace(gpu=handle.utilization_percent, memory=0)

    def nvmlDeviceGetTemperature(self, handle: FakeGpu, sensor: int) -> int:
        self._call("temperature")
        if handle.temperature_celsius is None:
            raise NVMLError_NotSupported("NotSupported")
        return handle.temperature_celsius

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGpu) -> list[Any]:
        self._call("processes")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in handle.processes]
