"""The sense layer's one fault logger (``resguard._probes.reporting.log_faults``), which the
snapshot backends and the process tables share: a warning per failing source, not per
sample, and one when it works again."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from resguard._probes.reporting import fields_outcome, log_faults
from resguard.snapshot import Fault

from support import fresh_fault_log


@pytest.fixture(autouse=True)
def _fresh_fault_log() -> Iterator[None]:
    with fresh_fault_log():
        yield


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "resguard.snapshot"]


def test_one_warning_per_failing_source_and_one_when_it_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="resguard.snapshot")
    faults = [
        Fault("memory.used", "psutil.virtual_memory()", "garbage", "available=-1"),
        Fault("memory.percent", "psutil.virtual_memory()", "garbage", "available=-1"),
        Fault("memory.used", "sysctl vm.x", "unreadable", "ENOENT", fallback="wired + active"),
    ]
    failing = log_faults(faults, frozenset(), 0.0)
    assert failing == {"psutil.virtual_memory()", "sysctl vm.x"}
    failing = log_faults(faults, failing, 1.0)  # the next sample, still failing: no more
    assert messages(caplog) == [
        "psutil.virtual_memory() is failing: garbage: available=-1; memory.percent, "
        "memory.used unknown (logged once until it recovers)",
        "sysctl vm.x is failing: unreadable: ENOENT; memory.used from wired + active "
        "(logged once until it recovers)",
    ]
    assert log_faults(faults[2:], failing, 2.0) == {"sysctl vm.x"}
    assert messages(caplog)[2:] == ["psutil.virtual_memory() works again"]


def test_a_fault_of_one_sample_only_is_logged_but_never_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="resguard.snapshot")
    once = Fault("process.cpu_percent", "/proc/uptime", "missing", "gone")
    assert log_faults([once], frozenset(), 0.0, once=[once]) == frozenset()
    assert log_faults([], frozenset(), 1.0) == frozenset()
    assert [m for m in messages(caplog) if "works again" in m] == []
    assert len(messages(caplog)) == 1


def test_a_table_logs_many_sources_as_one_with_its_own_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="resguard.snapshot")
    faults = [Fault("processes", f"/proc/{pid}/stat", "garbage", "cut") for pid in (7, 8)]
    failing = log_faults(
        faults,
        frozenset(),
        0.0,
        source_of=lambda fault: "/proc/<pid>/stat",
        outcome=lambda source, mine: f"{len(mine)} rows skipped",
    )
    assert failing == {"/proc/<pid>/stat"}
    assert messages(caplog) == [
        "/proc/<pid>/stat is failing: garbage: cut; 2 rows skipped (logged once until it recovers)"
    ]


def test_fields_outcome_names_unknown_and_filled_fields() -> None:
    faults = [
        Fault("memory.used", "f", "garbage", "x"),
        Fault("cpu.effective", "f", "garbage", "x", fallback="the host's CPU count"),
    ]
    assert fields_outcome("f", faults) == (
        "memory.used unknown; cpu.effective from the host's CPU count"
    )
