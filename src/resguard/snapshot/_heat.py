"""Heat: temperatures, fans and macOS's thermal state, as a :class:`HeatInfo`.

:class:`HeatReader` reads through a sensing backend: ``linux`` walks ``/sys/class/hwmon``
(re-rootable: ``hwmon_root=``), ``psutil`` asks ``psutil.sensors_temperatures()`` and
``psutil.sensors_fans()`` where psutil has them (Linux, FreeBSD; not macOS or Windows).
On macOS ``pmset -g therm`` gives the thermal state (:mod:`resguard._probes.thermal`).
What cannot be read is skipped, said once (a rate-limited warning, as for the kernel's
files) and listed in :attr:`HeatReader.faults`; reading never raises.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from resguard._errors import InvalidType
from resguard._probes import hwmon as _hwmon
from resguard._probes import thermal as _thermal
from resguard._probes.backend import Backend, backend_for
from resguard._probes.reporting import fields_outcome, log_faults
from resguard._probes.thermal import Damage
from resguard.snapshot._values import FanSpeed, Fault, HeatInfo, TemperatureSensor
from resguard.units import shown

__all__ = ["PMSET_MAX_AGE_S", "HeatReader", "Pmset"]

PMSET_MAX_AGE_S = 10.0
"""How old ``pmset -g therm``'s answer may be before it is run again: it is a process to
start, and macOS changes its thermal state over tens of seconds, not every tick."""

Pmset = Callable[[], "str | Damage | None"]
"""Runs ``pmset -g therm``: its output, ``None`` where there is none, or a damage."""

_TEMPERATURES = "psutil.sensors_temperatures()"
_FANS = "psutil.sensors_fans()"
_SKIPPED = {"heat.sensors": "the other sensors", "heat.fans": "the other fans"}
# what a kind's failure leaves unknown when none of its rows was read, on either backend
_UNKNOWN = {"heat.sensors": "heat.hottest_celsius", "heat.fans": "heat.fastest_fan_rpm"}
_CELSIUS_LOW, _CELSIUS_HIGH = _hwmon.CELSIUS_RANGE


def _outcome(source: str, faults: Sequence[Any]) -> str:
    if all(fault.fallback is not None for fault in faults):
        return f"skipped, {faults[0].fallback} are read"
    return fields_outcome(source, faults)


class HeatReader:
    """Reads this machine's heat: :meth:`read` gives a :class:`HeatInfo`, or ``None`` when
    the OS gives nothing (no sensors, no fans, no thermal state; a VM usually has none).

    *backend* is ``"linux"`` (hwmon files) or ``"psutil"``; ``None`` takes
    :func:`~resguard.snapshot.default_backend` (``"linux"`` when *hwmon_root* is given).
    *hwmon_root* re-roots
    ``/sys/class/hwmon`` for tests (a :class:`~resguard.testing.KernelTree` writes one).
    *pmset* runs ``pmset -g therm`` (default: the real command, on macOS only, with a
    deadline; its answer is kept for :data:`PMSET_MAX_AGE_S`). *clock* (monotonic
    seconds) times that and the rate limit of the warnings.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        hwmon_root: str | os.PathLike[str] = _hwmon.HWMON_ROOT,
        pmset: Pmset | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        root = os.fspath(hwmon_root) if isinstance(hwmon_root, (str, os.PathLike)) else None
        if not isinstance(root, str):
            raise InvalidType(
                f"hwmon_root={shown(hwmon_root)} is not a text path; expected a folder "
                "such as '/sys/class/hwmon'"
            )
        self._backend: Backend = backend_for(
            backend, {"hwmon_root": root if root != _hwmon.HWMON_ROOT else None}
        )
        self._hwmon_root = root
        if pmset is not None and not callable(pmset):
            raise InvalidType(f"pmset={shown(pmset)} is not callable; expected a function")
        if pmset is None and sys.platform == "darwin":
            pmset = _thermal.run_pmset
        self._pmset = pmset
        self._pmset_cache: tuple[float, str | Damage | None] | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._failing: frozenset[str] = frozenset()
        self.faults: tuple[Fault, ...] = ()
        """What the latest :meth:`read` could not read (``fallback`` set: a skipped sensor)."""

    @property
    def backend(self) -> Backend:
        """Where the temperatures and fans come from: ``"linux"`` or ``"psutil"``."""
        return self._backend

    def __repr__(self) -> str:
        where = f", hwmon_root={self._hwmon_root!r}" if self._backend == "linux" else ""
        pmset = ", pmset" if self._pmset is not None else ""
        return f"HeatReader(backend={self._backend!r}{where}{pmset})"

    def read(self) -> HeatInfo | None:
        """The heat now; never raises (what fails is skipped, logged once and in
        :attr:`faults`)."""
        faults: list[Fault] = []
        sources: list[str] = []
        sensors: tuple[TemperatureSensor, ...] = ()
        fans: tuple[FanSpeed, ...] = ()
        if self._backend == "linux":
            sensors, fans = self._read_hwmon(faults)
            if sensors or fans:
                sources.append("hwmon")
        else:
            sensors, fans = self._read_psutil(faults)
            if sensors or fans:
                sources.append("psutil")
        therm = self._read_pmset(faults)
        if therm is not None:
            sources.append("pmset")
        heat = None
        if sources:
            pressure = None if therm is None else _thermal.thermal_pressure(therm)
            rank = None if therm is None else _thermal.pressure_rank(therm)
            heat = HeatInfo.from_readings(
                sensors, fans, pressure, "+".join(sources), thermal_rank=rank
            )
        if heat is None:  # nothing at all: what failed left heat unknown
            faults = [Fault("heat", fault.source, fault.kind, fault.detail) for fault in faults]
        else:
            faults = _unread_kinds(faults, sensors, fans)
        with self._lock:
            self.faults = tuple(faults)
            self._failing = log_faults(faults, self._failing, self._clock(), outcome=_outcome)
        return heat

    def _read_hwmon(
        self, faults: list[Fault]
    ) -> tuple[tuple[TemperatureSensor, ...], tuple[FanSpeed, ...]]:
        reading = _hwmon.read_hwmon(self._hwmon_root)
        for path, kind, detail in reading.damages:
            stem = os.path.basename(path)
            field = "heat.fans" if stem.startswith("fan") else "heat.sensors"
            if path == self._hwmon_root:
                field = "heat"
            faults.append(Fault(field, path, kind, detail, _SKIPPED.get(field)))
        return (
            tuple(TemperatureSensor(*temperature) for temperature in reading.temperatures),
            tuple(FanSpeed(*fan) for fan in reading.fans),
        )

    def _read_psutil(
        self, faults: list[Fault]
    ) -> tuple[tuple[TemperatureSensor, ...], tuple[FanSpeed, ...]]:
        try:
            import psutil
        except ImportError as error:  # a dependency, but never an exception out of read()
            faults.append(Fault("heat", "psutil", "unreadable", f"cannot import psutil: {error}"))
            return (), ()
        sensors: list[TemperatureSensor] = []
        fans: list[FanSpeed] = []
        temperatures = _psutil_call(psutil, "sensors_temperatures", faults, _TEMPERATURES)
        for chip, rows in temperatures.items():
            for index, row in enumerate(rows[: _hwmon.MAX_INPUTS]):
                sensor = _psutil_sensor(chip, index, row)
                if sensor is None:
                    faults.append(_bad_row(_TEMPERATURES, "heat.sensors", chip, row))
                else:
                    sensors.append(sensor)
        for chip, rows in _psutil_call(psutil, "sensors_fans", faults, _FANS).items():
            for index, row in enumerate(rows[: _hwmon.MAX_INPUTS]):
                fan = _psutil_fan(chip, index, row)
                if fan is None:
                    faults.append(_bad_row(_FANS, "heat.fans", chip, row))
                else:
                    fans.append(fan)
        return tuple(sensors), tuple(fans)

    def _read_pmset(self, faults: list[Fault]) -> _thermal.PmsetTherm | None:
        if self._pmset is None:
            return None
        output = self._pmset_output(self._pmset)
        if output is None:
            return None
        if not isinstance(output, str):
            faults.append(Fault("heat.thermal_pressure", *output))
            return None
        therm = _thermal.parse_pmset_therm(output)
        if therm is None:
            faults.append(
                Fault(
                    "heat.thermal_pressure",
                    "pmset -g therm",
                    "garbage",
                    f"no thermal state in {output[:60]!r}",
                )
            )
            return None
        return therm

    def _pmset_output(self, pmset: Pmset) -> str | Damage | None:
        """*pmset*'s answer, run again only when the last one is older than
        :data:`PMSET_MAX_AGE_S` (a monitor reads heat every slow tick)."""
        now = self._clock()
        cached = self._pmset_cache
        if cached is not None and 0 <= now - cached[0] < PMSET_MAX_AGE_S:
            return cached[1]
        output: str | Damage | None
        try:
            output = pmset()
        except Exception as error:  # an injected runner; the real one never raises
            output = ("pmset -g therm", "unreadable", f"{type(error).__name__}: {error}")
        self._pmset_cache = (now, output)
        return output


def _unread_kinds(
    faults: list[Fault], sensors: Sequence[TemperatureSensor], fans: Sequence[FanSpeed]
) -> list[Fault]:
    """*faults*, those of a kind none of whose rows was read named for the figure they
    leave unknown (``heat.hottest_celsius``, ``heat.fastest_fan_rpm``) with no fallback:
    "the other sensors" were not read when there are none."""
    read = {"heat.sensors": bool(sensors), "heat.fans": bool(fans)}
    return [
        Fault(_UNKNOWN[fault.field], fault.source, fault.kind, fault.detail)
        if fault.field in _UNKNOWN and not read[fault.field]
        else fault
        for fault in faults
    ]


def _psutil_call(psutil: Any, name: str, faults: list[Fault], source: str) -> dict[str, Any]:
    """psutil's *name*() as a dict of chip -> rows; ``{}`` where psutil has none on this
    platform, and a fault when it raises or answers something else."""
    function = getattr(psutil, name, None)
    if function is None:
        return {}  # macOS, Windows: psutil has no such sensors there
    field = "heat.sensors" if name == "sensors_temperatures" else "heat.fans"
    try:
        answer = function()
    except Exception as error:  # psutil may raise on a damaged /sys, or anything else
        faults.append(Fault(field, source, "unreadable", f"{type(error).__name__}: {error}"))
        return {}
    if not isinstance(answer, dict):
        faults.append(Fault(field, source, "garbage", f"answered {type(answer).__name__}"))
        return {}
    return {
        str(chip): list(rows)
        for chip, rows in list(answer.items())[: _hwmon.MAX_CHIPS]
        if isinstance(rows, (list, tuple))
    }


def _number(value: object, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and low <= number <= high else None


def _psutil_sensor(chip: str, index: int, row: Any) -> TemperatureSensor | None:
    current = _number(getattr(row, "current", None), _CELSIUS_LOW, _CELSIUS_HIGH)
    if current is None:
        return None
    label = _hwmon.label_text(str(getattr(row, "label", "") or "")) or f"temp{index + 1}"
    marks = [
        _number(getattr(row, name, None), 0.001, _CELSIUS_HIGH) for name in ("high", "critical")
    ]
    return TemperatureSensor(_hwmon.label_text(chip) or "?", label, current, marks[0], marks[1])


def _psutil_fan(chip: str, index: int, row: Any) -> FanSpeed | None:
    rpm = _number(getattr(row, "current", None), 0.0, _hwmon.RPM_MAX)
    if rpm is None:
        return None
    label = _hwmon.label_text(str(getattr(row, "label", "") or "")) or f"fan{index + 1}"
    return FanSpeed(_hwmon.label_text(chip) or "?", label, rpm)


def _bad_row(source: str, field: str, chip: str, row: object) -> Fault:
    return Fault(
        field, f"{source}[{chip!r}]", "garbage", f"no reading in {row!r}"[:120], _SKIPPED[field]
    )
