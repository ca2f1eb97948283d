"""resguard.profile against real allocations: RSS vs tracemalloc, the kernel's high-water
mark, children, CPU, exports and the decorator forms."""

from __future__ import annotations

import asyncio
import csv
import ctypes
import io
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import TypeVar

import pytest

from resguard import InvalidValue
from resguard.profile import Profile, Sample, profile
from resguard.snapshot import Sampler, Snapshot
from resguard.testing import ManualClock

from support import run_python, wait_until

MB = 1_000_000
_T = TypeVar("_T")


def known(value: _T | None) -> _T:
    """*value*, asserted to be known (a figure the test's machine can always read)."""
    assert value is not None
    return value


def _count(prof: Profile) -> int:
    return len(prof.samples)


def _sampled_above(prof: Profile, rss: int) -> bool:
    """Whether a sample of *prof* saw this process's RSS at *rss* bytes or more."""
    return any((sample.rss or 0) >= rss for sample in prof.samples)


def _profile_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "resguard-profile"]


def test_a_tiny_block_runs_once_and_has_two_samples() -> None:
    runs = []
    with profile(interval="100ms") as prof:
        runs.append(1)
    assert runs == [1]
    assert len(prof.samples) == 2
    assert all(isinstance(sample, Sample) for sample in prof.samples)
    assert prof.samples[0].elapsed_s <= prof.samples[1].elapsed_s
    assert prof.duration >= 0
    assert known(prof.peak_rss) >= known(prof.samples[-1].rss) > 0
    assert not _profile_threads()


def test_samples_are_taken_in_the_background_while_the_block_runs() -> None:
    with profile(interval="20ms") as prof:
        # 2 bracketing samples plus 4 from the thread
        wait_until(lambda: len(prof.samples) >= 5, what="the thread's samples")
    assert len(prof.samples) >= 6
    times = [sample.elapsed_s for sample in prof.samples]
    assert times == sorted(times)
    # four samples 20 ms apart fell inside the block, which ended before the final sample
    assert 0.06 <= prof.duration <= times[-1] < 60


def test_samples_fall_due_by_the_profiles_clock() -> None:
    clock, cpu = ManualClock(), ManualClock(50.0)
    prof = Profile("100ms", uss_interval=None, clock=clock, cpu_clock=cpu)
    with prof:
        assert _count(prof) == 1
        assert prof.tick() is None  # not due yet
        clock.advance(0.099)
        assert prof.tick() is None
        cpu.advance(0.05)
        clock.advance(0.001)
        prof.tick()  # the thread may have taken it first: one sample per due time
        assert _count(prof) == 2
        assert prof.samples[1].elapsed_s == pytest.approx(0.1)
        assert prof.samples[1].cpu_percent == pytest.approx(50.0)
        assert prof.tick() is None
        clock.advance(1.0)  # fell far behind: one sample, not ten
        prof.tick()
        prof.tick()
        assert _count(prof) == 3
        clock.advance(0.1)
        prof.tick()
        assert _count(prof) == 4
        assert prof.duration == pytest.approx(1.2)
    assert _count(prof) == 5
    assert prof.duration == pytest.approx(1.2)
    assert prof.samples[-1].elapsed_s == pytest.approx(1.2)
    assert prof.cpu_seconds == pytest.approx(0.05)
    assert prof.mean_cpu_percent == pytest.approx(100 * 0.05 / 1.2)
    assert prof.tick() is None  # not running


def test_uss_is_read_at_its_own_interval() -> None:
    clock = ManualClock()
    with Profile("100ms", uss_interval="250ms", clock=clock) as prof:
        for _ in range(5):
            clock.advance(0.1)
            prof.tick()
    # read at 0 s, due again at 0.25 s: read at 0.3 s, due at 0.55 s; the final one reads it
    read = [s.uss is not None for s in prof.samples]
    assert read == [True, False, False, True, False, False, True]


def test_peak_of_a_touched_bytearray_matches_its_size() -> None:
    with profile(interval="20ms") as prof:
        block = bytearray(200 * MB)  # bytearray(n) memsets: every page is resident
        baseline = prof.samples[0].rss or 0
        wait_until(lambda: _sampled_above(prof, baseline + 190 * MB), what="a sample of the block")
        del block
    assert prof.peak_rss_delta == pytest.approx(200 * MB, rel=0.10)
    assert known(prof.peak_rss) >= max(known(s.rss) for s in prof.samples)


def test_a_spike_between_samples_is_caught_by_the_high_water_mark() -> None:
    # A fresh interpreter, so that its lifetime peak is below the spike; the interval is
    # far longer than the block, so only the kernel's VmHWM can see the 150 MB.
    code = textwrap.dedent("""
        from resguard.profile import profile
        with profile(interval="60s", uss_interval=None) as prof:
            block = bytearray(150_000_000)
            del block
        print(prof.peak_rss_delta, max(s.rss for s in prof.samples) - prof.baseline_rss)
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    peak_delta, sampled_delta = (int(word) for word in result.stdout.split())
    assert sampled_delta < 20 * MB  # the samples saw nothing ...
    assert peak_delta == pytest.approx(150 * MB, rel=0.10)  # ... the high-water mark did


def test_numpy_zeros_are_traced_but_not_resident_and_ones_are_both() -> None:
    numpy = pytest.importorskip("numpy")
    with profile(interval="20ms", tracemalloc=True) as zeros:
        array = numpy.zeros(25_000_000)  # 200 MB of float64 from calloc: pages untouched
        wait_until(lambda: len(zeros.samples) >= 3, what="a sample while the array lives")
        del array
    assert zeros.peak_traced is not None
    assert zeros.peak_traced >= 200 * MB
    assert max(known(s.rss) for s in zeros.samples) - known(zeros.baseline_rss) < 20 * MB

    with profile(interval="20ms", tracemalloc=True) as ones:
        array = numpy.ones(25_000_000)  # written: resident
        baseline = ones.samples[0].rss or 0
        wait_until(lambda: _sampled_above(ones, baseline + 190 * MB), what="a sample of the array")
        del array
    assert ones.peak_traced is not None
    assert ones.peak_traced >= 200 * MB
    ones_peak = max(known(s.rss) for s in ones.samples)
    assert ones_peak - known(ones.baseline_rss) == pytest.approx(200 * MB, rel=0.10)


def test_c_allocations_are_resident_but_not_traced() -> None:
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    with profile(interval="20ms", tracemalloc=True) as prof:
        pointer = libc.malloc(100 * MB)
        assert pointer
        ctypes.memset(pointer, 1, 100 * MB)
        baseline = prof.samples[0].rss or 0
        wait_until(lambda: _sampled_above(prof, baseline + 95 * MB), what="a sample of the block")
        libc.free(pointer)
    assert prof.peak_traced is not None
    assert prof.peak_traced < 10 * MB
    peak = max(known(s.rss) for s in prof.samples)
    assert peak - known(prof.baseline_rss) == pytest.approx(100 * MB, rel=0.10)


def test_tracing_that_was_already_on_stays_on() -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        with profile(tracemalloc=True) as prof:
            data = [bytes(1000) for _ in range(1000)]
        assert tracemalloc.is_tracing()
        assert prof.peak_traced is not None
        assert prof.peak_traced >= 1000 * 1000
        del data
    finally:
        tracemalloc.stop()
    with profile(tracemalloc=True):
        pass
    assert not tracemalloc.is_tracing()


def test_children_memory_is_summed() -> None:
    code = (
        "b = bytearray(100_000_000); import sys; sys.stdout.write('ok\\n'); "
        "sys.stdout.flush(); sys.stdin.read()"
    )
    with profile(interval="20ms", children=True) as prof:
        child = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "ok\n"
            wait_until(
                lambda: any((s.children_rss or 0) >= 100 * MB for s in prof.samples),
                what="a sample of the child",
            )
        finally:
            child.communicate("", timeout=60)
    assert known(prof.peak_children_rss) >= 100 * MB
    assert known(prof.peak_total_rss) >= known(prof.peak_children_rss)

    with profile(interval="20ms", children=False) as alone:
        child = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "ok\n"
            wait_until(lambda: len(alone.samples) >= 3, what="a sample while the child lives")
        finally:
            child.communicate("", timeout=60)
    assert alone.peak_children_rss is None  # not measured: unknown, not 0


def test_cpu_of_a_busy_loop_is_seen() -> None:
    with profile(interval="50ms") as prof:
        deadline = time.process_time() + 0.5
        while time.process_time() < deadline:
            pass
    assert prof.cpu_seconds >= 0.5
    # one core busy; on a loaded CI machine the loop gets a smaller share of the wall time
    assert prof.mean_cpu_percent > 5
    assert prof.peak_cpu_percent > 5
    assert prof.mean_cpu_percent == pytest.approx(100 * prof.cpu_seconds / prof.duration)


def test_headroom_and_uss_are_recorded() -> None:
    clock = ManualClock()
    with Profile("20ms", uss_interval="1h", clock=clock) as prof:
        for _ in range(5):
            clock.advance(0.02)
            prof.tick()
    assert len(prof.samples) == 7
    first, last = prof.samples[0], prof.samples[-1]
    assert first.uss is not None  # read at the start ...
    assert last.uss is not None  # ... and at the end
    assert all(s.uss is None for s in prof.samples[1:-1])  # not in between (1 h)
    assert 0 < known(first.available) <= known(first.limit)
    assert prof.min_available == min(known(s.available) for s in prof.samples)
    with profile(uss_interval=None) as no_uss:
        pass
    assert no_uss.peak_uss is None


def test_decorator_forms_and_async() -> None:
    calls = []

    @profile
    def bare(x: int) -> int:
        calls.append(x)
        return x * 2

    @profile(interval="10ms", label="work")
    def configured() -> bytes:
        return bytes(10 * MB)

    async def coroutine() -> str:
        await asyncio.sleep(0.05)
        return "done"

    wrapped = profile(interval="10ms")(coroutine)

    assert bare(3) == 6
    assert calls == [3]
    assert isinstance(bare.profile, Profile)  # type: ignore[attr-defined]
    assert len(bare.profile.samples) >= 2  # type: ignore[attr-defined]
    assert configured() == bytes(10 * MB)
    assert configured.profile.label == "work"  # type: ignore[attr-defined]
    assert asyncio.run(wrapped()) == "done"
    assert wrapped.profile.duration >= 0.04  # type: ignore[attr-defined]


class _CountingSampler(Sampler):
    """A real Sampler that counts the snapshots taken through it."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = 0

    def sample(self, *, uss: bool = False, children: bool = True) -> Snapshot:
        self.taken += 1
        return super().sample(uss=uss, children=children)


def test_a_busy_decorated_profile_samples_its_copy_through_the_given_sampler() -> None:
    """A recursive call is profiled by a copy "with the same settings": the sampler is one
    (it read the real /proc through a sampler of its own, whatever the user passed)."""
    sampler = _CountingSampler()
    prof = Profile("10s", sampler=sampler, clock=ManualClock(), cpu_clock=ManualClock())

    @prof
    def nested(depth: int) -> int:
        return depth if depth == 0 else nested(depth - 1)

    assert nested(1) == 0
    # the outer run's first and final samples, and the same for the copy inside it
    assert sampler.taken == 4
    assert len(prof.samples) == 2


def test_reuse_replaces_samples_and_reentry_is_refused() -> None:
    clock = ManualClock()
    prof = Profile("10ms", clock=clock)
    with prof:
        clock.advance(0.01)
        prof.tick()
    first = prof.samples
    assert len(first) == 3
    with prof:
        pass
    assert prof.samples != first
    assert len(prof.samples) == 2
    with prof, pytest.raises(RuntimeError, match="already running"), prof:
        pass
    assert not prof.running


def test_an_exception_in_the_block_propagates_and_the_profile_is_complete() -> None:
    prof = profile(interval="10ms")
    with pytest.raises(KeyError), prof:
        raise KeyError("boom")
    assert len(prof.samples) == 2
    assert not prof.running
    assert not _profile_threads()


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"interval": "0s"}, "above zero"),
        ({"interval": "soon"}, "soon"),
        ({"uss_interval": "-1s"}, "uss_interval"),
    ],
)
def test_bad_arguments_name_the_value(kwargs: dict[str, object], text: str) -> None:
    with pytest.raises(InvalidValue, match=text):
        profile(**kwargs)  # type: ignore[call-overload]


def test_csv_dataframe_html_and_plot(tmp_path: Path) -> None:
    clock = ManualClock()
    with Profile("10ms", tracemalloc=True, label="export", clock=clock) as prof:
        for _ in range(3):
            clock.advance(0.01)
            prof.tick()
    path = tmp_path / "profile.csv"
    prof.to_csv(path)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == len(prof.samples)
    assert int(rows[0]["rss"]) == prof.samples[0].rss
    assert set(rows[0]) >= {
        "elapsed_s",
        "rss",
        "uss",
        "cpu_percent",
        "available",
        "psi_memory_some_avg10",
        "traced_bytes",
    }
    buffer = io.StringIO()
    prof.to_csv(buffer)
    assert buffer.getvalue().splitlines()[0].startswith("elapsed_s,rss")

    frame = prof.to_dataframe()
    assert list(frame["rss"]) == [s.rss for s in prof.samples]

    html = prof._repr_html_()
    assert "peak_rss" in html
    assert "export" in html
    assert "peak_rss" in prof.summary()
    assert "peak RSS" in repr(prof)

    figure = prof.plot()
    assert len(figure.axes) == 2
    png = io.BytesIO()
    figure.savefig(png, format="png")
    assert png.getvalue().startswith(b"\x89PNG\r\n\x1a\n")


def test_missing_pandas_or_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    with profile() as prof:
        pass
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"resguard\[notebook\]"):
        prof.to_dataframe()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"resguard\[notebook\]"):
        prof.plot()


def test_importing_profile_imports_no_optional_package() -> None:
    code = (
        "import sys, resguard.profile; "
        "print(sorted(m for m in ('pandas', 'matplotlib', 'numpy', 'IPython') "
        "if m in sys.modules))"
    )
    assert run_python(code).strip() == "[]"


def test_concurrent_and_recursive_calls_of_a_decorated_function_all_run() -> None:
    barrier = threading.Barrier(4, timeout=30)

    @profile(interval="10ms")
    def work(depth: int = 0) -> int:
        if depth == 0:
            barrier.wait()  # four threads inside at the same moment
            return work(1) + 1
        return 1

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(work())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [2, 2, 2, 2]
    assert not work.profile.running  # type: ignore[attr-defined]
    assert len(work.profile.samples) >= 2  # type: ignore[attr-defined]
    assert not _profile_threads()  # every thread, the copies' too, was joined on exit


def test_overlapping_traced_profiles_share_tracing_and_stop_it_once() -> None:
    import tracemalloc

    assert not tracemalloc.is_tracing()
    with profile(tracemalloc=True) as outer:
        kept = bytes(3 * MB)
        with profile(tracemalloc=True) as inner:
            more = bytes(2 * MB)
        assert tracemalloc.is_tracing()  # the outer profile still traces
        del more
    assert not tracemalloc.is_tracing()
    assert inner.peak_traced is not None
    assert inner.peak_traced >= 2 * MB
    assert outer.peak_traced is not None
    assert outer.peak_traced >= 3 * MB
    del kept


def test_resguard_profile_is_callable_even_where_it_names_the_module() -> None:
    import resguard
    import resguard.profile  # rebinds the package attribute to the module

    with resguard.profile(interval="10ms") as prof:
        pass
    assert isinstance(prof, Profile)

    @resguard.profile
    def one() -> int:
        return 1

    assert one() == 1
    assert isinstance(one.profile, Profile)  # type: ignore[attr-defined]


def test_reentering_a_running_profile_is_an_invalid_state() -> None:
    from resguard import InvalidState, ResguardError

    prof = profile(interval="10ms")
    with prof, pytest.raises(InvalidState, match="already running") as info, prof:
        pass
    assert isinstance(info.value, ResguardError)
    assert isinstance(info.value, RuntimeError)
    assert not prof.running


@pytest.mark.parametrize("interval", ["1ns", "0.5ms", 1e-6])
def test_an_interval_below_one_millisecond_is_refused_not_a_busy_loop(interval: object) -> None:
    with pytest.raises(InvalidValue, match="1ms floor"):
        profile(interval=interval)  # type: ignore[call-overload]
    with pytest.raises(InvalidValue, match="1ms floor"):
        profile(uss_interval=interval)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"children": "false"}, "children='false'"),
        ({"tracemalloc": 1}, "tracemalloc=1"),
        ({"label": 5}, "label=5"),
        ({"interval": None}, "interval=None"),
    ],
)
def test_arguments_of_the_wrong_type_are_invalid_types(
    kwargs: dict[str, object], text: str
) -> None:
    from resguard import InvalidType

    with pytest.raises(InvalidType, match=text):
        profile(**kwargs)  # type: ignore[call-overload]
    with pytest.raises(InvalidType, match="sampler='default'"):
        Profile(sampler="default")  # type: ignore[arg-type]


def test_profile_of_a_non_function_is_an_invalid_type() -> None:
    from resguard import InvalidType

    with pytest.raises(InvalidType, match="expected a function"):
        profile(5)  # type: ignore[call-overload]


def test_to_csv_refuses_an_int_instead_of_writing_to_a_file_descriptor() -> None:
    from resguard import InvalidType

    with profile(interval="10ms") as prof:
        pass
    with pytest.raises(InvalidType, match="to_csv"):
        prof.to_csv(1)  # type: ignore[arg-type]


class _BlindSampler(Sampler):
    """A sampler whose kernel files were damaged: memory and RSS are unknown (None)."""

    def sample(self, *, uss: bool = False, children: bool = True) -> Snapshot:
        import attrs

        snap = super().sample(uss=uss, children=children)
        return attrs.evolve(
            snap,
            process=attrs.evolve(snap.process, rss=None, children_rss=None, uss=None),
            memory=attrs.evolve(snap.memory, available=None, used=None, limit=None),
        )


def test_unknown_memory_is_reported_as_unknown_not_zero(tmp_path: Path) -> None:
    clock = ManualClock()
    prof = Profile("10ms", sampler=_BlindSampler(), uss_interval=None, clock=clock)
    with prof:
        clock.advance(0.01)
        prof.tick()
    assert prof.samples
    assert all(s.rss is None and s.total_rss is None for s in prof.samples)
    assert prof.baseline_rss is None
    assert prof.peak_rss_delta is None
    assert prof.peak_total_rss is None
    assert prof.peak_children_rss is None
    assert prof.min_available is None
    assert prof.limit is None
    assert "unknown" in repr(prof)
    html = prof._repr_html_()
    assert "min_available" in html
    assert "unknown" in html
    path = tmp_path / "blind.csv"
    prof.to_csv(path)
    assert all(row["rss"] == "" for row in csv.DictReader(path.open()))
    pytest.importorskip("matplotlib")
    prof.plot()  # gaps, not a crash


def test_an_exit_without_an_entry_is_an_invalid_state() -> None:
    from resguard import InvalidState

    prof = profile(tracemalloc=True)
    with pytest.raises(InvalidState, match="not running"):
        prof.__exit__(None, None, None)
    with prof:  # still usable, and tracemalloc's share count is balanced
        pass
    assert len(prof.samples) == 2
