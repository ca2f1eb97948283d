"""macOS numbers psutil does not give: the kernel's memory-pressure level and the bytes
the memory compressor holds, read with ``sysctlbyname(3)`` through ctypes.

``kern.memorystatus_vm_pressure_level`` is the level Activity Monitor's "Memory Pressure"
graph shows (1 normal, 2 warning, 4 critical; readable without root);
``vm.compressor_bytes_used`` is the memory the compressor occupies, Activity Monitor's
"Compressed". The sysctl function is injectable, so this is tested on any platform with a
fake; a read that fails (no libc symbol, an errno, a value of an odd size) answers
``None`` and says why, and never raises.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Final

from resguard._probes.files import FaultKind

__all__ = [
    "COMPRESSOR_BYTES",
    "PRESSURE_LEVEL",
    "PRESSURE_LEVELS",
    "Sysctl",
    "SysctlError",
    "libc_sysctl",
    "read_int",
]

PRESSURE_LEVEL: Final = "kern.memorystatus_vm_pressure_level"
COMPRESSOR_BYTES: Final = "vm.compressor_bytes_used"
PRESSURE_LEVELS: Final = frozenset({1, 2, 4})
"""The levels the kernel reports: 1 normal, 2 warning, 4 critical."""

Sysctl = Callable[[str], bytes]
"""Reads one sysctl by name and returns its raw value; raises :class:`SysctlError`."""


class SysctlError(OSError):
    """A sysctl could not be read (no such name, no ``sysctlbyname`` in libc, an errno)."""


def libc_sysctl(name: str) -> bytes:
    """Read the sysctl *name* through libc's ``sysctlbyname`` (:class:`SysctlError` where
    libc has none, e.g. on Linux, or the call fails)."""
    import ctypes  # here, not at import: only a sampler on macOS reads sysctls

    function = _sysctlbyname()
    if function is None:
        raise SysctlError("libc has no sysctlbyname on this platform")
    size = ctypes.c_size_t(8)
    buffer = ctypes.create_string_buffer(8)
    result = function(name.encode(), buffer, ctypes.byref(size), None, ctypes.c_size_t(0))
    if result != 0:
        errno = ctypes.get_errno()
        raise SysctlError(errno, os.strerror(errno) if errno else "sysctlbyname failed")
    return buffer.raw[: size.value]


@functools.cache
def _sysctlbyname() -> Callable[..., int] | None:
    """libc's ``sysctlbyname``, looked up once, at the first read (finding libc runs
    ``ldconfig`` on Linux: not on the import path)."""
    import ctypes
    import ctypes.util

    try:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name, use_errno=True)
        function: Callable[..., int] = libc.sysctlbyname
    except (OSError, AttributeError, TypeError):
        return None
    return function


def read_int(sysctl: Sysctl, name: str) -> int | tuple[FaultKind, str]:
    """The integer sysctl *name* (a 4-byte int or an 8-byte quad, little-endian as on
    every Mac), else why not: ``(kind, detail)`` (``"unreadable"``: the read failed;
    ``"garbage"``: a value of another size); never raises."""
    try:
        raw = sysctl(name)
    except Exception as error:  # an injected or real reader failing in any way
        return "unreadable", f"{type(error).__name__}: {error}"
    if not isinstance(raw, (bytes, bytearray)) or len(raw) not in (4, 8):
        size = len(raw) if isinstance(raw, (bytes, bytearray)) else type(raw).__name__
        return "garbage", f"a value of odd size ({size}); expected 4 or 8 bytes"
    return int.from_bytes(raw, "little", signed=False)
