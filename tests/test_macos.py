"""The macOS path of the psutil backend, run here on Linux: an injected sysctl function
and psutil values shaped like macOS's (this path has not run on a real Mac in CI)."""

from __future__ import annotations

import collections
import ctypes
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resguard._probes import macos
from resguard.snapshot import Snapshot
from resguard.snapshot._portable import PsutilSampler
from resguard.testing import ManualClock

from support import fresh_fault_log, warnings_about

GiB = 2**30

# psutil's macOS virtual_memory(): used is active + wired, available inactive + free
MacVm = collections.namedtuple("MacVm", "total available percent used free active inactive wired")
MAC_VM = MacVm(16 * GiB, 6 * GiB, 62.5, 7 * GiB, 2 * GiB, 4 * GiB, 4 * GiB, 3 * GiB)


@pytest.fixture(autouse=True)
def _fresh_fault_log() -> Iterator[None]:
    with fresh_fault_log():
        yield


@pytest.fixture
def mac_vm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "virtual_memory", lambda: MAC_VM)


class FakeSysctl:
    """sysctlbyname as a dict of raw values; a value that is an exception is raised."""

    def __init__(self, **values: bytes | BaseException) -> None:
        self.values = {name.replace("__", "."): value for name, value in values.items()}
        self.reads: list[str] = []

    def __call__(self, name: str) -> bytes:
        self.reads.append(name)
        value = self.values.get(name, macos.SysctlError(2, "No such file or directory"))
        if isinstance(value, BaseException):
            raise value
        return value


def level(value: int) -> bytes:
    return value.to_bytes(4, "little")


def quad(value: int) -> bytes:
    return value.to_bytes(8, "little")


def mac_sampler(sysctl: Callable[[str], bytes], clock: ManualClock | None = None) -> PsutilSampler:
    return PsutilSampler(
        limits_max_age_s=1.0,
        slow_files_max_age_s=0.5,
        clock=clock or ManualClock(100.0),
        wall_clock=time.time,
        platform="darwin",
        sysctl=sysctl,
    )


@pytest.mark.parametrize("kernel_level", [1, 2, 4])
def test_the_pressure_level_is_the_kernel_s(mac_vm: None, kernel_level: int) -> None:
    sysctl = FakeSysctl(
        kern__memorystatus_vm_pressure_level=level(kernel_level),
        vm__compressor_bytes_used=quad(GiB),
    )
    snap = mac_sampler(sysctl).sample()
    assert snap.pressure.memory_level == kernel_level
    assert snap.pressure.memory is None  # no PSI on macOS
    assert snap.faults == ()


def test_used_is_wired_plus_active_plus_compressed_as_activity_monitor_counts(
    mac_vm: None,
) -> None:
    sysctl = FakeSysctl(
        kern__memorystatus_vm_pressure_level=level(1), vm__compressor_bytes_used=quad(GiB)
    )
    memory = mac_sampler(sysctl).sample().memory
    assert memory.used == 3 * GiB + 4 * GiB + GiB  # wired + active + compressed
    assert memory.total == memory.limit == 16 * GiB
    assert memory.available == 6 * GiB  # psutil's: inactive + free
    assert memory.percent == pytest.approx(50.0)
    assert (memory.source, memory.source_detail) == ("host", "psutil.virtual_memory()")


def test_without_the_compressor_sysctl_used_is_wired_plus_active_and_says_so(
    mac_vm: None, caplog: pytest.LogCaptureFixture
) -> None:
    sysctl = FakeSysctl(kern__memorystatus_vm_pressure_level=level(1))
    sampler = mac_sampler(sysctl)
    with caplog.at_level(logging.WARNING, "resguard.snapshot"):
        snaps = [sampler.sample() for _ in range(3)]
    for snap in snaps:
        assert snap.memory.used == 7 * GiB
        fault = next(f for f in snap.faults if f.field == "memory.used")
        assert fault.source == "sysctl vm.compressor_bytes_used"
        assert fault.fallback == "wired + active"
        assert snap.fault_for("memory.used") is None  # filled in, not unknown
    assert len(warnings_about(caplog, "sysctl vm.compressor_bytes_used")) == 1


def test_psutil_without_wired_or_active_falls_back_to_total_minus_available(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Vm = collections.namedtuple("Vm", "total available percent used free")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Vm(8 * GiB, 2 * GiB, 75.0, 0, 0))
    sysctl = FakeSysctl(kern__memorystatus_vm_pressure_level=level(1))
    snap = mac_sampler(sysctl).sample()
    assert snap.memory.used == 6 * GiB
    assert any(f.fallback == "total minus available" for f in snap.faults)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (macos.SysctlError(1, "Operation not permitted"), "unreadable"),
        (OSError("anything"), "unreadable"),
        (RuntimeError("odd"), "unreadable"),
        (b"\x01\x00", "garbage"),  # an odd size
        (b"", "garbage"),
        (level(3), "garbage"),  # no such level
        (level(0), "garbage"),
    ],
    ids=["errno", "oserror", "runtime", "2-bytes", "empty", "level-3", "level-0"],
)
def test_a_pressure_level_that_cannot_be_read_is_none_with_one_warning(
    mac_vm: None, caplog: pytest.LogCaptureFixture, raw: bytes | BaseException, kind: str
) -> None:
    clock = ManualClock(100.0)
    sysctl = FakeSysctl(kern__memorystatus_vm_pressure_level=raw, vm__compressor_bytes_used=quad(0))
    sampler = mac_sampler(sysctl, clock)
    with caplog.at_level(logging.WARNING, "resguard.snapshot"):
        snaps: list[Snapshot] = []
        for _ in range(3):
            snaps.append(sampler.sample())
            clock.advance(1.0)  # past the slow-value cache: read again each time
    for snap in snaps:
        assert snap.pressure.memory_level is None
        fault = snap.fault_for("pressure.memory_level")
        assert fault is not None
        assert (fault.source, fault.kind) == ("sysctl kern.memorystatus_vm_pressure_level", kind)
        assert snap.memory.total == 16 * GiB  # the rest still answers
    assert sysctl.reads.count(macos.PRESSURE_LEVEL) == 3
    assert len(warnings_about(caplog, "sysctl kern.memorystatus_vm_pressure_level")) == 1


def test_the_level_is_read_at_most_every_slow_interval(mac_vm: None) -> None:
    clock = ManualClock(100.0)
    sysctl = FakeSysctl(
        kern__memorystatus_vm_pressure_level=level(2), vm__compressor_bytes_used=quad(0)
    )
    sampler = mac_sampler(sysctl, clock)
    for _ in range(5):
        assert sampler.sample().pressure.memory_level == 2
    sysctl.values[macos.PRESSURE_LEVEL] = level(4)
    assert sampler.sample().pressure.memory_level == 2  # cached for half a second
    clock.advance(0.6)
    assert sampler.sample().pressure.memory_level == 4
    assert sysctl.reads.count(macos.PRESSURE_LEVEL) == 2


def test_read_int_takes_ints_and_quads_and_nothing_else() -> None:
    """A value read is the int itself (it answered kind "garbage" with it, as if damaged);
    what cannot be read is (kind, why)."""
    assert macos.read_int(lambda name: level(7), "x") == 7
    assert macos.read_int(lambda name: quad(2**40), "x") == 2**40
    assert macos.read_int(lambda name: b"abc", "x") == (
        "garbage",
        "a value of odd size (3); expected 4 or 8 bytes",
    )
    not_bytes = macos.read_int(lambda name: "1", "x")  # type: ignore[arg-type,return-value]
    assert not_bytes == ("garbage", "a value of odd size (str); expected 4 or 8 bytes")


def test_the_libc_reader_fails_cleanly_where_libc_has_no_sysctlbyname() -> None:
    """Linux's libc has no sysctlbyname: the real reader raises SysctlError, read_int
    answers None (on a Mac this reads the kernel; not run in CI)."""
    failed = macos.read_int(macos.libc_sysctl, macos.PRESSURE_LEVEL)
    assert isinstance(failed, tuple)
    assert failed[0] == "unreadable"
    assert "sysctlbyname" in failed[1]


def test_the_libc_reader_passes_name_buffer_and_size_as_sysctlbyname_wants(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stand-in for libc's sysctlbyname: the reader hands it the name as bytes, an
    8-byte buffer and its size, and keeps the bytes the call said it wrote."""
    calls: list[tuple[bytes, int]] = []

    def fake(name: bytes, buffer: Any, size: Any, new: None, new_size: Any) -> int:
        size_t = size._obj  # the c_size_t behind byref()
        calls.append((name, size_t.value))
        ctypes.memmove(buffer, level(4), 4)
        size_t.value = 4
        return 0

    monkeypatch.setattr(macos, "_sysctlbyname", lambda: fake)
    assert macos.read_int(macos.libc_sysctl, macos.PRESSURE_LEVEL) == 4
    assert calls == [(b"kern.memorystatus_vm_pressure_level", 8)]

    def failing(name: bytes, buffer: Any, size: Any, new: None, new_size: Any) -> int:
        ctypes.set_errno(1)
        return -1

    monkeypatch.setattr(macos, "_sysctlbyname", lambda: failing)
    failed = macos.read_int(macos.libc_sysctl, macos.PRESSURE_LEVEL)
    assert isinstance(failed, tuple)
    assert failed[0] == "unreadable"
    assert "SysctlError" in failed[1]


_QUAD = st.integers(min_value=0, max_value=2**64 - 1)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150)
@given(
    compressed=st.one_of(_QUAD, st.sampled_from([2**64 - 1, 2**63, 16 * GiB, 16 * GiB + 1])),
    wired=st.integers(min_value=0, max_value=16 * GiB),
    active=st.integers(min_value=0, max_value=16 * GiB),
)
def test_a_compressor_value_above_the_total_is_garbage_not_a_full_machine(
    monkeypatch: pytest.MonkeyPatch, compressed: int, wired: int, active: int
) -> None:
    """vm.compressor_bytes_used = 2**64 - 1 (or anything that puts wired + active +
    compressed above the RAM) made used the whole machine, 100 %, with no fault: every
    Guard refused everything. Such a value is garbage: used falls back to wired + active
    (or total minus available when those alone are too many), with a fault saying so."""
    total = 16 * GiB
    vm = MacVm(total, 6 * GiB, 62.5, 7 * GiB, 2 * GiB, active, 4 * GiB, wired)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: vm)
    sysctl = FakeSysctl(
        kern__memorystatus_vm_pressure_level=level(1), vm__compressor_bytes_used=quad(compressed)
    )
    snap = mac_sampler(sysctl).sample()
    used = snap.memory.used
    assert used is not None
    assert 0 <= used <= total
    fallbacks = {f.fallback for f in snap.faults if f.field == "memory.used"}
    if wired + active + compressed <= total:
        assert (used, fallbacks) == (wired + active + compressed, set())
    elif wired + active <= total:
        assert (used, fallbacks) == (wired + active, {"wired + active"})
        fault = next(f for f in snap.faults if f.field == "memory.used")
        assert (fault.source, fault.kind) == ("sysctl vm.compressor_bytes_used", "garbage")
    else:
        assert used == total - 6 * GiB
        assert "total minus available" in fallbacks
    assert snap.fault_for("memory.used") is None  # filled in: never unknown, never 0 % forced


def test_a_guard_admits_under_a_nonsense_compressor_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tester's case end to end: the compressor answers 2**64 - 1 on a calm Mac, and
    a Guard on the default sampler refused every call."""
    import importlib

    import resguard._probes.backend
    from resguard import Guard, ResourceExhausted
    from resguard.snapshot import Sampler

    sensing = importlib.import_module("resguard.snapshot")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: MAC_VM)
    sysctl = FakeSysctl(
        kern__memorystatus_vm_pressure_level=level(1), vm__compressor_bytes_used=quad(2**64 - 1)
    )
    sampler = Sampler(backend="psutil")
    monkeypatch.setattr(sampler, "_impl", mac_sampler(sysctl))
    monkeypatch.setattr(resguard._probes.backend, "_chosen", "psutil")
    monkeypatch.setitem(sensing._default_samplers, "psutil", sampler)
    try:
        with Guard(memory="90%", reserve="1MiB"):
            admitted = True
    except ResourceExhausted:
        admitted = False
    assert admitted
    assert sensing.snapshot().memory.percent == pytest.approx(100 * 7 / 16)
