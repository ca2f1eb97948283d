"""``limit_self`` where the sensing backend is psutil and there is no ``/proc`` (macOS,
simulated here with psutil's macOS-shaped ``memory_info()``: no ``data`` field, a virtual
size of hundreds of GiB). A self-limit that no Guard can measure, or that the process is
already past, blinds or blocks every Guard: it is refused and nothing is set."""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

import resguard._probes.backend
from resguard import InvalidState, InvalidValue
from resguard.guard import _self, limit_self

from support import run_python

resource = pytest.importorskip("resource")

GiB = 2**30
MacMem = collections.namedtuple("MacMem", "rss vms pfaults pageins")  # psutil's on macOS


def _rlimits() -> tuple[Any, Any]:
    return resource.getrlimit(resource.RLIMIT_DATA), resource.getrlimit(resource.RLIMIT_AS)


@pytest.fixture
def no_proc(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No /proc/self/status, as on macOS and Windows."""
    monkeypatch.setattr(_self, "_STATUS_PATH", str(tmp_path / "no-proc" / "status"), raising=False)


@pytest.fixture
def mac_memory_info(monkeypatch: pytest.MonkeyPatch, no_proc: None) -> Iterator[None]:
    """The psutil backend, no /proc and a macOS-shaped memory_info() of 400 GiB virtual."""
    monkeypatch.setattr(resguard._probes.backend, "_chosen", "psutil")
    monkeypatch.setattr(psutil.Process, "memory_info", lambda self: MacMem(GiB, 400 * GiB, 0, 0))
    before = _rlimits()
    yield
    after = _rlimits()
    for which, (soft, hard) in zip((resource.RLIMIT_DATA, resource.RLIMIT_AS), before, strict=True):
        resource.setrlimit(which, (soft, hard))  # had a case set one, this process lives on
    assert after == before  # every case here is refused: nothing was set


def test_a_data_limit_psutil_cannot_measure_is_refused_saying_why(mac_memory_info: None) -> None:
    """kind='data' was set though psutil has no data segment on macOS: every Guard then saw
    used, available and percent as unknown and admitted everything (or refused all)."""
    with pytest.raises(InvalidState, match=r"kind='data'.*no data-segment size") as info:
        limit_self("2GiB", kind="data")
    assert "nothing was set" in str(info.value)
    assert "kind='as'" in str(info.value)  # what to do instead


def test_an_address_space_limit_below_the_virtual_size_is_refused(mac_memory_info: None) -> None:
    """kind='as' below the process's virtual size (400 GiB on macOS) was set, and every Guard
    refused every call: its floor read /proc/self/status, which macOS does not have."""
    with pytest.raises(InvalidValue, match=r"'2GiB'.*400\.0 GiB of it \(memory_info\(\)\.vms\)"):
        limit_self("2GiB", kind="as")


def test_the_floor_reads_psutil_where_proc_is_absent_on_the_linux_backend_too(
    monkeypatch: pytest.MonkeyPatch, no_proc: None
) -> None:
    monkeypatch.setattr(resguard._probes.backend, "_chosen", "linux")
    vms = psutil.Process().memory_info().vms
    before = _rlimits()
    with pytest.raises(InvalidValue, match=r"memory_info\(\)\.vms"):
        limit_self(vms // 2, kind="as")
    assert _rlimits() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="psutil has data on Linux")
def test_psutil_s_data_segment_is_measurable_on_linux_and_counts_for_the_floor(
    monkeypatch: pytest.MonkeyPatch, no_proc: None
) -> None:
    monkeypatch.setattr(resguard._probes.backend, "_chosen", "psutil")
    data = psutil.Process().memory_info().data
    with pytest.raises(InvalidValue, match=r"memory_info\(\)\.data"):
        limit_self(data // 2, kind="data")


def test_an_address_space_limit_above_the_virtual_size_lets_guards_admit() -> None:
    """On the macOS-shaped psutil backend a kind='as' limit the process fits under is set,
    and a Guard measures against it (used is the virtual size psutil reports)."""
    code = """
import collections, psutil, resguard._probes.backend as backend
from resguard.guard import _self
_self._STATUS_PATH = "/nonexistent/status"
backend.set_default_backend("psutil")
real = psutil.Process.memory_info
MacMem = collections.namedtuple("MacMem", "rss vms pfaults pageins")
def mac(self):
    info = real(self)
    return MacMem(info.rss, info.vms, 0, 0)
mac.cache_activate = real.cache_activate
mac.cache_deactivate = real.cache_deactivate
psutil.Process.memory_info = mac
import resguard
vms = psutil.Process().memory_info().vms
print(resguard.limit_self(vms + 2 * 2**30, kind="as") == vms + 2 * 2**30)
memory = resguard.snapshot().memory
print(memory.source_detail, memory.used is not None and memory.used < memory.limit)
with resguard.Guard(memory="99%", reserve="1MiB"):
    print("admitted")
"""
    assert run_python(code).splitlines() == ["True", "RLIMIT_AS True", "admitted"]
