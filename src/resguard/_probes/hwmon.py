"""Temperatures and fans from Linux's hwmon class (``/sys/class/hwmon``), re-rootable.

Each ``hwmonN`` directory is one chip: ``name`` names it, ``tempN_input`` is a sensor in
millidegrees Celsius (``tempN_max`` its high mark, ``tempN_crit`` its critical one,
``tempN_label`` its label) and ``fanN_input`` a fan in revolutions per minute
(``fanN_label``). Older drivers keep the files in the chip's ``device/`` directory.

Reading never raises: a damaged or unreadable sensor file (a sleeping NVMe drive answers
``EIO``/``ENODATA``) skips that sensor and is returned as a damage for the caller to report;
a machine without the class (a VM, a container without ``/sys``) reads as no sensors.
The walk is bounded (:data:`MAX_CHIPS` chips, :data:`MAX_INPUTS` inputs of each kind per
chip), so a hostile or huge tree costs a bounded number of reads.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from typing import NamedTuple

from resguard._probes.files import FaultKind, damage_of
from resguard._probes.names import clean_text

__all__ = [
    "CELSIUS_RANGE",
    "HWMON_ROOT",
    "MAX_CHIPS",
    "MAX_INPUTS",
    "RPM_MAX",
    "Damage",
    "Fan",
    "HwmonReading",
    "Temperature",
    "label_text",
    "read_hwmon",
]

HWMON_ROOT = "/sys/class/hwmon"
MAX_CHIPS = 64
"""The most ``hwmonN`` chips read; a laptop has a handful."""
MAX_INPUTS = 64
"""The most ``tempN``/``fanN`` inputs read per chip and kind."""
_LABEL_CHARS = 64
_FILE_CAP_BYTES = 4096
CELSIUS_RANGE = (-273.15, 500.0)
"""The temperatures a chip can have, °C; a reading beyond is a bad read."""
RPM_MAX = 100_000.0
"""The fastest a fan can spin, rpm; a reading above is a bad read."""

# the kernel never pads an index: temp01_input is no input (it read temp1 a second time)
_INPUT = re.compile(r"(temp|fan)(0|[1-9][0-9]{0,3})_input\Z")
_INTEGER = re.compile(r"^-?[0-9]{1,12}\n$")

Damage = tuple[str, FaultKind, str]
"""(path, kind, detail) of a file that could not be read or parsed."""


class Temperature(NamedTuple):
    """One ``tempN`` of a chip, in degrees Celsius (marks ``None`` when the chip has none)."""

    chip: str
    label: str
    current_celsius: float
    high_celsius: float | None
    critical_celsius: float | None


class Fan(NamedTuple):
    """One ``fanN`` of a chip, in revolutions per minute."""

    chip: str
    label: str
    rpm: float


class HwmonReading(NamedTuple):
    """What one walk found: the sensors and fans read, and the files that failed."""

    temperatures: tuple[Temperature, ...]
    fans: tuple[Fan, ...]
    damages: tuple[Damage, ...]


def label_text(text: str) -> str:
    """A chip's name or a label as the record keeps it: one line, each unprintable
    character a ``?``, at most 64 characters (not an escape for a terminal: that is
    :func:`resguard._modules.render.printable`'s, when it is shown)."""
    cleaned = "".join(char if char.isprintable() else "?" for char in clean_text(text.strip()))
    return cleaned[:_LABEL_CHARS]


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


def _read(path: str) -> str | Damage:
    """The text of a small sysfs file (at most 4 KiB), or why not. Opened without
    blocking and read only when it is a regular file (every sysfs attribute is): a FIFO
    or a device planted under a re-rooted tree cannot hang the walk."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return path, "missing", "no such file"
        return path, "unreadable", f"cannot open: {error.strerror or error}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return path, "unreadable", "not a regular file"
        data = os.read(fd, _FILE_CAP_BYTES)
    except OSError as error:
        return path, "unreadable", f"cannot read: {error.strerror or error}"
    finally:
        os.close(fd)
    return data.decode("ascii", "replace")


def _integer(path: str) -> int | Damage:
    """A whole number file (``45000\\n``), or why not."""
    text = _read(path)
    if not isinstance(text, str):
        return text
    if _INTEGER.match(text) is None:
        return (path, *damage_of(text))
    return int(text)


def _celsius(path: str, *, optional: bool) -> float | Damage | None:
    """Millidegrees in *path* as degrees; ``None`` for an optional mark that is absent or
    0 or below (chips write 0 for "no mark")."""
    value = _integer(path)
    if not isinstance(value, int):
        return None if optional and value[1] == "missing" else value
    celsius = value / 1000.0
    if optional and celsius <= 0:
        return None
    low, high = CELSIUS_RANGE
    if not low <= celsius <= high:
        return path, "garbage", f"{celsius:g} °C is no temperature a chip can have"
    return celsius


def _label(directory: str, stem: str) -> str:
    text = _read(os.path.join(directory, f"{stem}_label"))
    label = label_text(text) if isinstance(text, str) else ""
    return label or stem


def _inputs(directory: str) -> tuple[list[tuple[str, int]], str]:
    """The ``(kind, index)`` inputs of a chip, sorted, and the directory holding them
    (the chip's own, or its ``device/`` on older drivers)."""
    for place in (directory, os.path.join(directory, "device")):
        try:
            names = os.listdir(place)
        except OSError:
            continue
        found = sorted(
            {
                (match.group(1), int(match.group(2)))
                for match in map(_INPUT.match, names)
                if match is not None
            }
        )
        if found:
            return found, place
    return [], directory


def _chip_number(name: str) -> tuple[int, str]:
    digits = name.removeprefix("hwmon")
    return (int(digits), name) if digits.isdigit() and len(digits) < 8 else (1 << 30, name)


def _read_temperature(
    chip: str, place: str, index: int, damages: list[Damage]
) -> Temperature | None:
    stem = f"temp{index}"
    current = _celsius(os.path.join(place, f"{stem}_input"), optional=False)
    if not isinstance(current, float):
        if current is not None:
            damages.append(current)
        return None
    marks: list[float | None] = []
    for suffix in ("max", "crit"):
        mark = _celsius(os.path.join(place, f"{stem}_{suffix}"), optional=True)
        if isinstance(mark, tuple):
            damages.append(mark)
            mark = None
        marks.append(mark)
    return Temperature(chip, _label(place, stem), current, marks[0], marks[1])


def _read_fan(chip: str, place: str, index: int, damages: list[Damage]) -> Fan | None:
    stem = f"fan{index}"
    path = os.path.join(place, f"{stem}_input")
    rpm = _integer(path)
    if not isinstance(rpm, int):
        damages.append(rpm)
        return None
    if not 0 <= rpm <= RPM_MAX:
        damages.append((path, "garbage", f"{rpm} rpm is no fan speed"))
        return None
    return Fan(chip, _label(place, stem), float(rpm))


def read_hwmon(root: str = HWMON_ROOT) -> HwmonReading:
    """Every sensor and fan under *root* (``/sys/class/hwmon``), in chip order; never
    raises. A *root* that is not there is a machine without hwmon: nothing, no damage."""
    damages: list[Damage] = []
    try:
        chips = sorted(os.listdir(root), key=_chip_number)[:MAX_CHIPS]
    except FileNotFoundError:
        return HwmonReading((), (), ())
    except OSError as error:
        return HwmonReading((), (), ((root, "unreadable", f"cannot list: {error}"),))
    temperatures: list[Temperature] = []
    fans: list[Fan] = []
    for entry in chips:
        directory = os.path.join(root, entry)
        name = _read(os.path.join(directory, "name"))
        chip = (label_text(name) if isinstance(name, str) else "") or entry
        inputs, place = _inputs(directory)
        counts = {"temp": 0, "fan": 0}
        for kind, index in inputs:
            counts[kind] += 1
            if counts[kind] > MAX_INPUTS:
                continue
            if kind == "temp":
                temperature = _read_temperature(chip, place, index, damages)
                if temperature is not None:
                    temperatures.append(temperature)
            else:
                fan = _read_fan(chip, place, index, damages)
                if fan is not None:
                    fans.append(fan)
    return HwmonReading(tuple(temperatures), tuple(fans), tuple(damages))
