"""The NVML probe: readings through an injected NVML, degraded readings, deadlines, the extra."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from resguard._probes.gpu import DRIVER_DIR, NvmlSession
from resguard.snapshot import GpuProcess, GpuReader, Sampler, read_gpus
from resguard.testing import ManualClock
from resguard.testing.nvml import FakeGpu, FakeNVML

from support import run_python, wait_until

GIB = 1 << 30
LONG_S = 30.0  # the deadline where nothing hangs: a loaded machine's new thread is slow


def _two_gpus() -> FakeNVML:
    return FakeNVML(
        devices=[
            FakeGpu(memory_total_bytes=24 * GIB, memory_used_bytes=6 * GIB, processes=[(41, GIB)]),
            FakeGpu(
                name="NVIDIA Other",
                memory_total_bytes=16 * GIB,
                memory_used_bytes=15 * GIB,
                utilization_percent=97,
                temperature_celsius=None,  # a board without the sensor: NotSupported
                processes=[(42, None)],
            ),
        ]
    )


def test_sampler_reads_every_device_with_its_processes() -> None:
    snap = Sampler(nvml=_two_gpus()).sample()
    assert snap.gpus is not None
    first, second = snap.gpus
    assert (first.index, first.memory_total_bytes, first.memory_free_bytes) == (
        0,
        24 * GIB,
        18 * GIB,
    )
    assert first.processes == (GpuProcess(41, GIB),)
    assert (second.utilization_percent, second.temperature_celsius) == (97.0, None)
    assert second.processes == (GpuProcess(42, None),)
    assert snap.gpu is not None
    assert snap.gpu.memory is not None
    assert (snap.gpu.count, snap.gpu.memory.device) == (2, 1)  # the fuller board


def test_no_device_is_an_empty_tuple_not_unknown() -> None:
    assert read_gpus(nvml=FakeNVML()) == ()


def test_readings_are_kept_for_the_slow_files_age_of_the_sampler_clock() -> None:
    nvml, clock = _two_gpus(), ManualClock()
    sampler = Sampler(nvml=nvml, clock=clock)
    assert sampler.sample().gpus is not None
    calls = nvml.calls
    nvml.devices[0].memory_used_bytes = 20 * GIB
    first = sampler.sample().gpus
    assert first is not None
    assert first[0].memory_used_bytes == 6 * GIB
    assert nvml.calls == calls
    clock.advance(0.5)
    later = sampler.sample().gpus
    assert later is not None
    assert later[0].memory_used_bytes == 20 * GIB


def test_a_failing_query_leaves_only_its_fields_unknown_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = _two_gpus()
    nvml.fail("memory", "GpuIsLost")
    reader = GpuReader(nvml, deadline_s=LONG_S)
    with caplog.at_level(logging.WARNING, logger="resguard"):
        for _ in range(3):
            gpus = reader.read()
            assert gpus is not None
            assert gpus[0].memory_used_bytes is None
            assert gpus[0].utilization_percent == 0.0
            assert gpus[0].name == "NVIDIA Fake GPU"
    lines = [r for r in caplog.records if "nvml memory" in r.getMessage()]
    assert len(lines) == 1
    assert "GpuIsLost" in lines[0].getMessage()
    nvml.heal()
    healed = reader.read()
    assert healed is not None
    assert healed[0].memory_used_bytes == 6 * GIB


def test_no_driver_is_unknown_with_one_info_line_and_no_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = FakeNVML(init_error="DriverNotLoaded")
    reader = GpuReader(nvml, deadline_s=LONG_S)
    with caplog.at_level(logging.INFO, logger="resguard"):
        assert reader.read() is None
        assert reader.read() is None
    assert nvml.init_calls == 1
    assert reader.unavailable is not None
    assert "DriverNotLoaded" in reader.unavailable
    infos = [r for r in caplog.records if "NVML did not start" in r.getMessage()]
    assert [r.levelno for r in infos] == [logging.INFO]


def _no_reading_out() -> None:
    wait_until(
        lambda: not any(t.name == "resguard-nvml" for t in threading.enumerate()),
        what="every NVML reading's thread to return",
    )


def test_a_hung_driver_costs_one_deadline_then_answers_unknown_at_once() -> None:
    nvml = _two_gpus()
    reader = GpuReader(nvml, deadline_s=0.05)
    # a reading's new thread may take over 50 ms on a loaded machine: the answers that do
    # not hang are waited for, only the hung one is timed
    wait_until(lambda: reader.read() is not None, what="a first reading")
    _no_reading_out()
    nvml.hang()
    assert reader.read() is None  # waited 0.05 s
    assert nvml.blocked.wait(10), "the reading never reached NVML"
    calls = nvml.calls
    assert reader.read() is None  # the hung call is still out: no second thread
    assert nvml.calls == calls
    nvml.release()
    _no_reading_out()
    wait_until(lambda: reader.read() is not None, what="a reading once NVML answers again")


def test_shutdown_stops_nvml_started_once() -> None:
    nvml = _two_gpus()
    session = NvmlSession(nvml, deadline_s=LONG_S)
    session.read()
    session.read()
    session.shutdown()
    assert (nvml.init_calls, nvml.shutdown_calls) == (1, 1)


def test_nvml_is_shut_down_at_interpreter_exit() -> None:
    out = run_python(
        "import atexit\n"
        "from resguard.snapshot import read_gpus\n"
        "from resguard.testing.nvml import FakeGpu, FakeNVML\n"
        "nvml = FakeNVML([FakeGpu()])\n"
        "atexit.register(lambda: print('shutdowns', nvml.shutdown_calls))\n"
        "read_gpus(nvml=nvml)\n"
    )
    assert out.strip() == "shutdowns 1"


def test_import_resguard_does_not_import_pynvml() -> None:
    out = run_python("import sys, resguard; print('pynvml' in sys.modules)")
    assert out.strip() == "False"


def test_without_the_extra_snapshot_has_no_gpus_and_asking_names_the_extra() -> None:
    out = run_python(
        "import sys; sys.modules['pynvml'] = None\n"
        "import resguard\n"
        "from resguard.snapshot import Sampler, read_gpus\n"
        "print(resguard.snapshot().gpus)\n"
        "for ask in (read_gpus, lambda: Sampler(gpus=True)):\n"
        "    try:\n"
        "        ask()\n"
        "    except ImportError as error:\n"
        "        print(error)\n"
    )
    lines = out.strip().splitlines()
    assert lines[0] == "None"
    assert len(lines) == 3
    assert all("pip install 'resguard[gpu]'" in line for line in lines[1:])


def test_real_pynvml_degrades_cleanly_without_a_driver() -> None:
    reader = GpuReader()  # the real nvidia-ml-py; CI has no NVIDIA driver
    gpus = reader.read()
    if gpus is None:
        assert reader.unavailable is not None
        assert "NVMLError" in reader.unavailable or DRIVER_DIR in reader.unavailable
    else:  # a machine with a GPU: real readings
        assert all(gpu.memory_total_bytes for gpu in gpus)


def test_sampler_on_re_rooted_files_reads_no_gpus_unless_told(tmp_path: object) -> None:
    from resguard.testing import KernelTree

    tree = KernelTree(tmp_path)  # type: ignore[arg-type]
    assert Sampler(tree.roots).sample().gpus is None
    assert Sampler(tree.roots, nvml=FakeNVML()).sample().gpus == ()


def test_without_a_driver_nvml_is_not_started_and_no_thread_is_spent() -> None:
    out = run_python(
        "import pynvml, resguard\n"
        "calls = []\n"
        "pynvml.nvmlInit = lambda: calls.append('init')\n"
        "resguard.snapshot(); resguard.snapshot()\n"
        "print(calls)\n"
    )
    driver = os.path.isdir(DRIVER_DIR)
    assert out.strip() == ("['init']" if driver else "[]")


def test_a_thread_that_cannot_start_is_unknown_gpus_not_an_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = GpuReader(_two_gpus(), deadline_s=LONG_S)

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    assert reader.read() is None
    monkeypatch.undo()
    assert reader.read() is not None
