"""NVIDIA GPUs through NVML: the one module that imports ``pynvml`` (the ``gpu`` extra).

``pynvml`` is imported lazily, when a reading is first asked for, so ``import resguard``
never loads it. NVML is initialised once per :class:`NvmlSession` (the process-wide one
for ``pynvml`` is :func:`shared_session`) and shut down at interpreter exit. Every
reading runs on a short-lived worker thread and is waited for at most *deadline_s*: a
wedged driver can hang an NVML call for minutes, and resguard never hangs its caller.
While a reading that missed its deadline is still stuck, later readings answer ``None``
at once instead of piling threads up behind it. Any NVML error degrades the one query it
broke to ``None`` (``NotSupported`` silently: many boards lack a sensor); a session
whose ``nvmlInit`` failed (no library, no driver: a machine without an NVIDIA GPU)
answers ``None`` from then on, after one log line (debug when there is no NVIDIA library
at all, so a server on a machine without a GPU prints nothing about it; info when the
driver is not loaded; a warning for any other failure).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final, NamedTuple

from resguard._modules import forks
from resguard._modules.log import emit, get_logger
from resguard._probes.reporting import report_failure, report_recovery

__all__ = [
    "DRIVER_DIR",
    "GPU_EXTRA_HINT",
    "NVML_DEADLINE_S",
    "PLAUSIBLE",
    "NvmlSession",
    "RawGpu",
    "import_nvml",
    "memory_readings",
    "plausible",
    "session_for",
    "shared_session",
]

GPU_EXTRA_HINT: Final = "pip install 'resguard[gpu]'"
NVML_DEADLINE_S: Final = 1.0
"""How long one reading of every device may take before it counts as hung (NVML answers
in about a millisecond per query on a healthy driver)."""

_INIT_LOG_LEVELS: Final = {
    "NVMLError_LibraryNotFound": logging.DEBUG,  # no NVIDIA driver at all: no GPU to speak of
    "NVMLError_DriverNotLoaded": logging.INFO,  # a driver installed but not loaded
    "NVMLError_NoPermission": logging.INFO,
}  # anything else (a driver that is there and fails) is a warning

_log = get_logger("resguard.snapshot")


class RawGpu(NamedTuple):
    """One device as NVML answered; every field it could not give is ``None``."""

    device: int
    name: str | None
    uuid: str | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    utilization_percent: float | None
    temperature_celsius: float | None
    processes: tuple[tuple[int, int | None], ...] | None


def import_nvml() -> ModuleType:
    """``pynvml``, or an ImportError that names the extra to install."""
    try:
        import pynvml  # type: ignore[import-untyped]  # nvidia-ml-py ships no types
    except ImportError as error:
        raise ImportError(
            f"GPU readings need nvidia-ml-py, which cannot be imported ({error}); "
            f"install the gpu extra: {GPU_EXTRA_HINT}",
            name="pynvml",
        ) from error
    module: ModuleType = pynvml
    return module


def _text(value: object) -> str | None:
    if isinstance(value, bytes):  # older pynvml answers bytes
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


#: The readings NVML can give, as (lowest, highest) a working board reports: anything
#: outside (inf, -300 °C, a utilisation of 1e9) is a driver answering nonsense, unknown.
PLAUSIBLE: Final = {
    "utilization_percent": (0.0, 100.0),
    "temperature_celsius": (-40.0, 150.0),
}


def plausible(field: str, value: float | None) -> float | None:
    """*value* when it is a finite reading of *field* in :data:`PLAUSIBLE`'s range, else
    ``None`` (unknown)."""
    if value is None:
        return None
    low, high = PLAUSIBLE[field]
    return value if low <= value <= high else None  # NaN and inf fail both comparisons


def memory_readings(
    total: int | None, used: int | None, free: int | None
) -> tuple[int | None, int | None, int | None]:
    """NVML's (total, used, free) with a used or free above the total (which no board
    has) unknown, ``None``."""
    if total is None:
        return total, used, free
    return (
        total,
        used if used is None or used <= total else None,
        free if free is None or free <= total else None,
    )


class NvmlSession:
    """NVML over *module* (``pynvml`` or a double with its functions, e.g.
    :class:`resguard.testing.FakeNVML`): :meth:`read` gives every device's readings, or
    ``None`` when NVML is unavailable or hung; it never raises."""

    def __init__(self, module: Any, *, deadline_s: float = NVML_DEADLINE_S) -> None:
        self._nvml = module
        self._deadline_s = deadline_s
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._ready = False
        self._unavailable: str | None = None
        self._stuck: threading.Thread | None = None
        self._at_exit = False
        self._failing: set[str] = set()  # the queries whose failure was logged
        self._implausible: set[str] = set()  # the fields whose nonsense was logged
        forks.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._stuck = None  # the parent's worker does not exist here

    @property
    def unavailable(self) -> str | None:
        """Why NVML gives nothing (its ``nvmlInit`` error), ``None`` while it answers."""
        return self._unavailable

    def mark_unavailable(self, why: str) -> None:
        """Answer ``None`` from now on without asking NVML, for *why* (logged at debug)."""
        self._unavailable = why
        emit(_log, logging.DEBUG, "no GPU readings: %s; gpus unknown", why)

    def read(self, deadline_s: float | None = None) -> tuple[RawGpu, ...] | None:
        """Every device's readings now, waited for at most *deadline_s* (``None``: the
        session's); ``None`` when NVML cannot be used or the reading missed its deadline.
        A reader that comes while another's reading is out waits for that one (at most
        the deadline), never starting a second."""
        deadline_s = self._deadline_s if deadline_s is None else deadline_s
        if not self._lock.acquire(timeout=deadline_s):
            return None  # another reader's reading is out and hangs: this one is unknown too
        try:
            return self._read_locked(deadline_s)
        finally:
            self._lock.release()

    def _read_locked(self, deadline_s: float) -> tuple[RawGpu, ...] | None:
        if self._unavailable is not None:
            return None
        if self._stuck is not None:
            if self._stuck.is_alive():
                return None
            self._stuck = None
            report_recovery("nvml")
        result: list[tuple[RawGpu, ...] | None] = [None]
        worker = threading.Thread(
            target=self._read_into, args=(result,), name="resguard-nvml", daemon=True
        )
        try:
            worker.start()
        except RuntimeError as error:  # no thread to be had (an rlimit, a thread cap)
            report_failure("nvml", f"no thread: {error}", "no thread", time.monotonic())
            return None
        worker.join(deadline_s)
        if worker.is_alive():
            self._stuck = worker
            report_failure(
                "nvml",
                f"hung: an NVML reading took over {deadline_s:g} s (a wedged "
                "driver?); gpus unknown until it returns",
                "hung",
                time.monotonic(),
            )
            return None
        return result[0]

    def _read_into(self, result: list[tuple[RawGpu, ...] | None]) -> None:
        try:
            result[0] = self._read_all()
        except Exception as error:  # a double or a driver answering nonsense: unknown
            message = f"garbage: {type(error).__name__}: {error}"
            report_failure("nvml", message, "garbage", time.monotonic())

    def _init(self) -> bool:
        nvml = self._nvml
        if os.getpid() != self._pid:  # a forked child: NVML's handles are the parent's
            self._pid, self._ready = os.getpid(), False
        if self._ready:
            return True
        try:
            nvml.nvmlInit()
        except Exception as error:
            name = type(error).__name__
            self._unavailable = f"{name}: {error}"
            level = _INIT_LOG_LEVELS.get(name, logging.WARNING)
            emit(_log, level, "no GPU readings: NVML did not start (%s); gpus unknown", error)
            return False
        self._ready = True
        if not self._at_exit:
            self._at_exit = True
            atexit.register(self.shutdown)
        return True

    def shutdown(self) -> None:
        """Shut NVML down (at exit; a later :meth:`read` starts it again)."""
        if self._ready and os.getpid() == self._pid:
            self._ready = False
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # at exit, a driver gone is nothing to report
                pass

    def _read_all(self) -> tuple[RawGpu, ...] | None:
        if not self._init():
            return None
        count = _count(self._query("device count", self._nvml.nvmlDeviceGetCount))
        if count is None:
            return None
        return tuple(self._device(index) for index in range(count))

    def _query(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)``, or ``None`` for an NVML error (logged once, unless the board
        merely does not support the query)."""
        source = f"nvml {what}"
        try:
            value = call(*args)
        except Exception as error:
            name = type(error).__name__
            if name != "NVMLError_NotSupported":
                self._failing.add(source)
                report_failure(source, f"{name}: {error}", name, time.monotonic())
            return None
        if source in self._failing:
            self._failing.discard(source)
            report_recovery(source)
        return value

    def _device(self, index: int) -> RawGpu:
        nvml, query = self._nvml, self._query
        handle = query("handle", nvml.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            return RawGpu(index, None, None, None, None, None, None, None, None)
        memory = query("memory", nvml.nvmlDeviceGetMemoryInfo, handle)
        rates = query("utilization", nvml.nvmlDeviceGetUtilizationRates, handle)
        sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
        listed = query("processes", nvml.nvmlDeviceGetComputeRunningProcesses, handle)
        processes: tuple[tuple[int, int | None], ...] | None = None
        if listed is not None:
            processes = tuple(
                (pid, _count(getattr(row, "usedGpuMemory", None)))
                for row in listed
                if (pid := _count(getattr(row, "pid", None))) is not None
            )
        read = (
            _count(getattr(memory, "total", None)),
            _count(getattr(memory, "used", None)),
            _count(getattr(memory, "free", None)),
        )
        total, used, free = memory_readings(*read)
        self._check(index, "memory_used_bytes", read[1], used)
        self._check(index, "memory_free_bytes", read[2], free)
        utilization = _number(getattr(rates, "gpu", None))
        temperature = _number(query("temperature", nvml.nvmlDeviceGetTemperature, handle, sensor))
        return RawGpu(
            index,
            _text(query("name", nvml.nvmlDeviceGetName, handle)),
            _text(query("uuid", nvml.nvmlDeviceGetUUID, handle)),
            total,
            used,
            free,
            self._plausible(index, "utilization_percent", utilization),
            self._plausible(index, "temperature_celsius", temperature),
            processes,
        )

    def _plausible(self, index: int, field: str, value: float | None) -> float | None:
        kept = plausible(field, value)
        self._check(index, field, value, kept)
        return kept

    def _check(self, index: int, field: str, read: object, kept: object) -> None:
        """Log once per field (per session) that NVML answered nonsense for it."""
        if read is not None and kept is None and field not in self._implausible:
            self._implausible.add(field)
            emit(
                _log,
                logging.WARNING,
                "GPU %d: NVML reported %s = %r, which no working board reports; %s unknown "
                "(said once)",
                index,
                field,
                read,
                field,
            )


_shared: list[NvmlSession] = []
_shared_lock = threading.Lock()


_sessions: weakref.WeakValueDictionary[int, NvmlSession] = weakref.WeakValueDictionary()


def session_for(module: Any, *, deadline_s: float = NVML_DEADLINE_S) -> NvmlSession:
    """The one session over NVML *module* (a module or a double), shared by every reader
    of it: a hung reading is then paid for once (one stuck thread, one deadline), not
    again by each new :class:`~resguard.snapshot.Sampler` made with the same ``nvml=``."""
    with _shared_lock:
        session = _sessions.get(id(module))
        if session is None or session._nvml is not module:
            session = NvmlSession(module, deadline_s=deadline_s)
            _sessions[id(module)] = session  # the session holds module: its id stays its own
        return session


DRIVER_DIR: Final = "/proc/driver/nvidia"
"""Where Linux shows a loaded NVIDIA kernel driver (in containers too: it is the kernel's)."""


def shared_session() -> NvmlSession:
    """The process-wide session over ``pynvml`` (ImportError naming the extra without it).
    On Linux without :data:`DRIVER_DIR` it answers ``None`` without starting NVML: no
    thread, no library loaded, where there is no driver to ask."""
    with _shared_lock:
        if not _shared:
            module = import_nvml()
            session = _sessions.get(id(module))
            if session is None or session._nvml is not module:
                session = NvmlSession(module)
                _sessions[id(module)] = session  # a reader given nvml=pynvml shares it
            if sys.platform.startswith("linux") and not os.path.isdir(DRIVER_DIR):
                session.mark_unavailable(f"no NVIDIA driver loaded ({DRIVER_DIR} is absent)")
            _shared.append(session)
        return _shared[0]
