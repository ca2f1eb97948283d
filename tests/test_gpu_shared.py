"""Readers of one NVML module share its session (issue 16, round 2, R1 #13): with a hung
driver each new ``Sampler(nvml=...)`` waited its own second and left one more thread stuck."""

from __future__ import annotations

import threading
import time

import pytest

from resguard._probes import gpu as probe
from resguard._probes.gpu import session_for
from resguard.snapshot._gpu import GpuReader
from resguard.testing.nvml import FakeGpu, FakeNVML

from support import wait_until


def nvml_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "resguard-nvml")


def test_a_hung_reading_is_paid_for_once_by_every_reader_of_the_same_module() -> None:
    nvml = FakeNVML([FakeGpu()])
    nvml.hang()
    before = nvml_threads()
    try:
        assert GpuReader(nvml, deadline_s=0.05).read() is None  # hung: past its deadline
        assert nvml.blocked.wait(30)
        assert nvml_threads() == before + 1
        started = time.monotonic()
        for _ in range(5):  # new readers, each with a long deadline of its own
            assert GpuReader(nvml, deadline_s=5.0).read() is None
        assert time.monotonic() - started < 2.5  # not 5 x 5 s: no reader waited again
        assert nvml_threads() == before + 1  # and none started another thread
    finally:
        nvml.release()
    reader = GpuReader(nvml, deadline_s=30.0)
    wait_until(lambda: reader.read() is not None, timeout_s=30, what="the reading to come back")
    wait_until(lambda: nvml_threads() == before, timeout_s=30, what="the stuck thread to end")


def test_one_session_per_module_and_another_for_another_module() -> None:
    first, second = FakeNVML([FakeGpu()]), FakeNVML([FakeGpu()])
    assert session_for(first) is session_for(first)
    assert session_for(first) is not session_for(second)
    assert GpuReader(first).read() is not None


def test_the_process_wide_session_is_the_one_a_reader_given_that_module_gets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = FakeNVML([FakeGpu()])
    monkeypatch.setattr(probe, "_shared", [])
    monkeypatch.setattr(probe, "import_nvml", lambda: module)
    assert probe.shared_session() is session_for(module)
