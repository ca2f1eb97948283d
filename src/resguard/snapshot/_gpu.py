"""GPU readings as snapshot values: :class:`GpuReader` turns the NVML probe's answers
into :class:`~resguard.snapshot.GpuInfo` records, at most once per *max_age_s*."""

from __future__ import annotations

import threading
from typing import Any

from resguard._probes import gpu as _gpu
from resguard.snapshot._values import GpuInfo, GpuProcess

__all__ = ["GpuReader", "gpu_reader"]


class GpuReader:
    """The GPUs now, through one NVML session: *nvml* is a module with NVML's functions
    (``pynvml``, or :class:`resguard.testing.FakeNVML` in tests); ``None`` takes the
    process-wide ``pynvml`` session (ImportError naming ``resguard[gpu]`` without it).
    A reading is kept for *max_age_s* (NVML's counters move about once a second) and
    waited for at most *deadline_s* (then ``None``: a wedged driver hangs NVML calls);
    readers of one *nvml* share its session, so a hung reading costs one thread and one
    deadline, not one per new reader.
    :meth:`read` never raises: ``None`` is unknown (no driver, a hung reading)."""

    __slots__ = ("_at_s", "_deadline_s", "_lock", "_max_age_s", "_session", "_value")

    def __init__(
        self, nvml: Any = None, *, max_age_s: float = 0.5, deadline_s: float = _gpu.NVML_DEADLINE_S
    ) -> None:
        if nvml is None:
            self._session = _gpu.shared_session()
        else:
            self._session = _gpu.session_for(nvml, deadline_s=deadline_s)
        self._max_age_s = max_age_s
        self._deadline_s = deadline_s
        self._lock = threading.Lock()
        self._at_s: float | None = None
        self._value: tuple[GpuInfo, ...] | None = None

    @property
    def unavailable(self) -> str | None:
        """Why NVML gives nothing (its start-up error), ``None`` while it answers."""
        return self._session.unavailable

    def read(self, now_s: float | None = None) -> tuple[GpuInfo, ...] | None:
        """Every GPU's readings (a copy at most *max_age_s* old at monotonic *now_s*;
        ``None``: read now)."""
        with self._lock:
            at_s = self._at_s
            if now_s is not None and at_s is not None and 0 <= now_s - at_s < self._max_age_s:
                return self._value
            raw = self._session.read(self._deadline_s)
            self._value = None if raw is None else tuple(_info(item) for item in raw)
            self._at_s = now_s
            return self._value


def _info(raw: _gpu.RawGpu) -> GpuInfo:
    """*raw* as a :class:`GpuInfo`, field by name (a reordered ``RawGpu`` or ``GpuInfo``
    can never swap two readings of one type silently)."""
    processes = None
    if raw.processes is not None:
        processes = tuple(GpuProcess(pid=pid, used_bytes=used) for pid, used in raw.processes)
    return GpuInfo(
        index=raw.device,
        name=raw.name,
        uuid=raw.uuid,
        memory_total_bytes=raw.memory_total_bytes,
        memory_used_bytes=raw.memory_used_bytes,
        memory_free_bytes=raw.memory_free_bytes,
        utilization_percent=raw.utilization_percent,
        temperature_celsius=raw.temperature_celsius,
        processes=processes,
    )


def gpu_reader(gpus: bool | None, nvml: Any, max_age_s: float) -> GpuReader | None:
    """The reader a :class:`~resguard.snapshot.Sampler` told *gpus* and *nvml* uses:
    ``False`` none; ``True`` one, or the ImportError naming the extra; ``None`` one when
    *nvml* is given or ``pynvml`` imports, else none (``Snapshot.gpus`` stays ``None``)."""
    if gpus is False:
        return None
    if nvml is not None or gpus:
        return GpuReader(nvml, max_age_s=max_age_s)
    try:
        return GpuReader(max_age_s=max_age_s)
    except ImportError:
        return None
