"""The series issue 16 asked for, one behaviour each: ratios in 0–1 beside the deprecated
percentages, PSI's totals as node_exporter's stall counters (absent, never 0, where the
kernel has no line), the working set, readiness as the readiness path answers it, bytes
freed by each ladder step from the first scrape, the admission wait buckets, and
``/metrics`` inside an ASGI app."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from resguard import InvalidType, InvalidValue
from resguard.asgi import GuardMiddleware
from resguard.guard import Guard
from resguard.monitor import Monitor, State
from resguard.prometheus import DEPRECATED, ResguardCollector, asgi_app, with_metrics
from resguard.prometheus._parts import wait_buckets
from resguard.reclaim import Ladder
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import PressureInfo, PressureLine, ResourcePressure
from resguard.testing import ManualClock, StaticMonitor, make_snapshot
from resguard.testing.nvml import make_gpu

from support import asgi_get, hello_app, wait_until

MIB = 2**20
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class _Frozen:
    """A monitor stand-in holding one State."""

    def __init__(self, state: State) -> None:
        self.state = state


def quiet() -> Policy:
    return Policy([Threshold("memory.percent", ">", 99.9, level=Level.CRITICAL)])


def exposition(collector: ResguardCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def samples_of(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(collector: ResguardCollector) -> Samples:
    return samples_of(exposition(collector))


def frozen(**snapshot: Any) -> ResguardCollector:
    snap = make_snapshot(**snapshot)
    return ResguardCollector(_Frozen(State(snap, quiet().evaluate(snap), 1)))


def line(avg10: float, total_us: int) -> PressureLine:
    return PressureLine(avg10=avg10, avg60=0.0, avg300=0.0, total_us=total_us)


def test_psi_totals_are_node_exporters_stall_counters_in_seconds() -> None:
    pressure = PressureInfo(
        memory=ResourcePressure(line(2.5, 1_500_000), line(1.0, 250_000)),
        cpu=ResourcePressure(line(30.0, 7_000_000), None),  # a kernel without CPU full
        io=None,  # no I/O PSI at all
        source="system",
    )
    snap = attrs.evolve(make_snapshot(), pressure=pressure)
    text = exposition(ResguardCollector(_Frozen(State(snap, quiet().evaluate(snap), 1))))
    samples = samples_of(text)
    assert samples[("resguard_pressure_memory_waiting_seconds_total", ())] == 1.5
    assert samples[("resguard_pressure_memory_stalled_seconds_total", ())] == 0.25
    assert samples[("resguard_pressure_cpu_waiting_seconds_total", ())] == 7.0
    for unknown in ("cpu_stalled", "io_waiting", "io_stalled"):  # absent, never 0
        name = f"resguard_pressure_{unknown}_seconds_total"
        assert (name, ()) not in samples
        assert f"# TYPE {name} counter" in text  # described, without a sample
    ratio = "resguard_pressure_avg10_ratio"
    assert samples[(ratio, (("kind", "some"), ("resource", "memory")))] == 0.025
    assert samples[(ratio, (("kind", "some"), ("resource", "cpu")))] == 0.3
    assert (ratio, (("kind", "full"), ("resource", "cpu"))) not in samples
    percent = "resguard_pressure_avg10_percent"
    assert samples[(percent, (("kind", "some"), ("resource", "cpu")))] == 30.0


@given(
    memory_percent=st.floats(min_value=0, max_value=100),
    cpu_percent=st.floats(min_value=0, max_value=100),
)
def test_ratios_are_the_percentages_over_100(memory_percent: float, cpu_percent: float) -> None:
    samples = scrape(frozen(memory_percent=memory_percent, cpu_percent=cpu_percent))
    for ratio, percent in (
        ("resguard_memory_used_ratio", "resguard_memory_used_percent"),
        ("resguard_cpu_usage_ratio", "resguard_cpu_percent"),
    ):
        assert 0 <= samples[(ratio, ())] <= 1
        assert samples[(ratio, ())] == pytest.approx(samples[(percent, ())] / 100)


def test_the_deprecated_names_say_so_and_name_their_replacement() -> None:
    text = exposition(frozen())
    for old, new in DEPRECATED.items():
        assert f"# HELP {old} Deprecated, use {new}; removed in the next release." in text
        assert f"# HELP {new} " in text
        assert "Deprecated" not in text.split(f"# HELP {new} ")[1].splitlines()[0]


def test_the_working_set_is_a_cgroups_figure_only() -> None:
    snap = make_snapshot(used=3 * MIB, limit=10 * MIB)
    assert snap.memory.source == "cgroup"
    cgroup = ResguardCollector(_Frozen(State(snap, quiet().evaluate(snap), 1)))
    snap = attrs.evolve(snap, memory=attrs.evolve(snap.memory, source="host"))
    host = ResguardCollector(_Frozen(State(snap, quiet().evaluate(snap), 1)))
    assert scrape(cgroup)[("resguard_memory_working_set_bytes", ())] == 3 * MIB
    assert ("resguard_memory_working_set_bytes", ()) not in scrape(host)


def test_each_gpu_is_exported_by_its_index_and_unknown_gpus_are_absent() -> None:
    gpus = (
        make_gpu(0, used_percent=50.0, total_bytes=16 << 30, utilization_percent=80.0),
        make_gpu(1, temperature_celsius=None, utilization_percent=None),
    )
    snap = attrs.evolve(make_snapshot(), gpus=gpus)
    samples = scrape(ResguardCollector(_Frozen(State(snap, quiet().evaluate(snap), 1))))
    assert samples[("resguard_gpu_devices", ())] == 2
    assert samples[("resguard_gpu_memory_total_bytes", (("gpu", "0"),))] == 16 << 30
    assert samples[("resguard_gpu_memory_used_bytes", (("gpu", "0"),))] == 8 << 30
    assert samples[("resguard_gpu_memory_free_bytes", (("gpu", "0"),))] == 8 << 30
    assert samples[("resguard_gpu_utilization_ratio", (("gpu", "0"),))] == 0.8
    assert samples[("resguard_gpu_temperature_celsius", (("gpu", "0"),))] == 45.0
    for unknown in ("utilization_ratio", "temperature_celsius"):  # NVML could not say
        assert (f"resguard_gpu_{unknown}", (("gpu", "1"),)) not in samples
    no_device = attrs.evolve(make_snapshot(), gpus=())
    samples = scrape(ResguardCollector(_Frozen(State(no_device, quiet().evaluate(snap), 1))))
    assert samples[("resguard_gpu_devices", ())] == 0
    no_nvml = scrape(frozen())  # gpus=None: unknown, not "no GPU"
    assert not [name for name, _ in no_nvml if name.startswith("resguard_gpu_")]


async def _nothing(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not reached")


@pytest.mark.parametrize(("critical_percent", "ready"), [(99.9, 1.0), (0.0, 0.0)])
def test_ready_is_what_the_readiness_path_answers(critical_percent: float, ready: float) -> None:
    policy = Policy([Threshold("memory.percent", ">=", critical_percent, level=Level.CRITICAL)])
    with Monitor(interval="50ms", policy=policy, reclaim=False) as monitor:
        middleware = GuardMiddleware(_nothing, Guard(monitor=monitor), start_monitor=False)
        samples = scrape(ResguardCollector(monitor, readiness=middleware))
        answer = middleware.readiness()
    assert samples[("resguard_ready", ())] == ready
    assert (answer["status"] == "ready") == bool(ready)


def test_a_readiness_that_raises_leaves_ready_unknown_and_counts_the_error() -> None:
    def broken() -> bool:
        raise RuntimeError("readiness broke")

    collector = ResguardCollector(readiness=broken)
    samples = scrape(collector)
    assert ("resguard_ready", ()) not in samples
    assert samples[("resguard_scrape_errors_total", (("part", "readiness"),))] == 1
    garbage = scrape(ResguardCollector(readiness=lambda: "yes"))  # neither a dict nor a bool
    assert ("resguard_ready", ()) not in garbage
    assert garbage[("resguard_scrape_errors_total", (("part", "readiness"),))] == 1
    assert (
        scrape(ResguardCollector(readiness=lambda: {"status": "unready"}))[("resguard_ready", ())]
        == 0
    )


def test_every_scrape_error_part_is_a_counter_at_0_from_the_first_scrape() -> None:
    samples = scrape(ResguardCollector())
    parts = {
        dict(labels)["part"]: value
        for (name, labels), value in samples.items()
        if name == "resguard_scrape_errors_total"
    }
    assert parts == dict.fromkeys(
        ("snapshot", "guard", "cache", "model", "reclaim", "readiness"), 0
    )


class _Rung:
    """A reclaimable that frees *frees* bytes of the ladder's measured use each time."""

    cost = 1.0

    def __init__(self, name: str, used: list[int], frees: int) -> None:
        self.name, self._used, self._frees = name, used, frees

    def reclaimable_bytes(self) -> int:
        return self._frees

    def reclaim(self, target_bytes: int) -> int:
        self._used[0] -= self._frees
        return self._frees


def freed(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["step"]: value
        for (name, labels), value in samples.items()
        if name == "resguard_reclaim_freed_bytes_total"
    }


def test_each_ladder_step_is_a_counter_from_the_first_scrape() -> None:
    used = [1000 * MIB]
    ladder = Ladder(
        lambda: used[0],
        min_reclaim=1,
        extra=[_Rung("embeddings", used, 10 * MIB), _Rung("idle-model", used, 100 * MIB)],
    )
    collector = ResguardCollector(ladder=ladder)
    assert freed(scrape(collector)) == {"gc.collect": 0, "embeddings": 0, "idle-model": 0}
    ladder.run(5 * MIB)  # the cache's rung is enough
    assert freed(scrape(collector))["embeddings"] == 10 * MIB
    assert freed(scrape(collector))["idle-model"] == 0
    ladder.run(50 * MIB)
    ladder.run(50 * MIB)  # two climbs between scrapes: both are counted
    after = freed(scrape(collector))
    assert after["embeddings"] == 30 * MIB
    assert after["idle-model"] == 200 * MIB


def test_a_monitors_ladder_is_exported_without_naming_it() -> None:
    with Monitor(interval="50ms", policy=quiet(), reclaim=False) as monitor:
        assert freed(scrape(ResguardCollector(monitor)))["gc.collect"] == 0


BOUNDS_S = (0.01, 0.1, 1.0)


@given(
    st.lists(st.integers(min_value=0, max_value=1000), min_size=4, max_size=4),
    st.integers(min_value=0, max_value=10_000),
)
def test_wait_buckets_put_immediate_admissions_in_every_bucket(
    queued_counts: list[int], immediate: int
) -> None:
    admitted = immediate + sum(queued_counts)
    buckets = wait_buckets(BOUNDS_S, queued_counts, admitted)
    assert buckets is not None
    assert [le for le, _ in buckets] == ["0.01", "0.1", "1.0", "+Inf"]
    counts = [count for _, count in buckets]
    assert counts == sorted(counts)  # cumulative
    assert counts[0] == immediate + queued_counts[0]
    assert counts[-1] == admitted  # +Inf is every admission


def test_a_queued_admission_is_in_the_buckets_from_its_wait_up_and_immediate_ones_in_all() -> None:
    clock = ManualClock(1000.0)
    guard = Guard(max_concurrent=1, monitor=StaticMonitor(clock=clock), clock=clock, name="api")
    for _ in range(2):  # admitted at once (lock-free): 0 s
        with guard:
            pass
    reserve = guard.acquire()
    waiter = threading.Thread(target=lambda: guard.release(guard.acquire(wait_s=30)))
    waiter.start()
    wait_until(lambda: guard.stats().waiting == 1, what="the call to queue")
    clock.advance(0.04)  # waits 40 ms
    guard.release(reserve)
    waiter.join(timeout=10)
    samples = scrape(ResguardCollector(guards=[guard]))
    name = "resguard_guard_admission_wait_seconds"

    def bucket(le: str) -> float:
        return samples[(f"{name}_bucket", (("guard", "api"), ("le", le)))]

    # three admitted at once (two blocks and the holder) are in every bucket
    assert bucket("0.001") == bucket("0.025") == 3
    assert bucket("0.05") == bucket("30.0") == bucket("+Inf") == 4
    assert samples[(f"{name}_count", (("guard", "api"),))] == 4
    assert samples[(f"{name}_sum", (("guard", "api"),))] == pytest.approx(0.04)
    assert samples[("resguard_guard_admitted_total", (("guard", "api"),))] == 4


def test_wait_buckets_need_one_count_per_bound_and_the_overflow() -> None:
    assert wait_buckets(BOUNDS_S, (), 5) is None
    assert wait_buckets(BOUNDS_S, (1, 2, 3), 6) is None


def test_with_metrics_answers_the_metrics_path_and_passes_the_rest_on() -> None:
    guard = Guard(name="api")
    app = with_metrics(hello_app, ResguardCollector(guards=[guard]))
    metrics = asgi_get(app, "/metrics")
    assert metrics.status_code == 200
    assert 'resguard_guard_refused_total{guard="api",reason="memory"} 0.0' in metrics.text
    assert asgi_get(app, "/metricsx").text == "hello /metricsx"
    assert asgi_get(app, "/").text == "hello /"
    # below a prefix (uvicorn --root-path /api) the path is matched without it
    assert asgi_get(app, "/api/metrics", root_path="/api").status_code == 200
    assert "resguard_guard_admitted_total" in asgi_get(app, "/api/metrics", root_path="/api").text
    assert "resguard_memory_used_ratio" in asgi_get(asgi_app(), "/").text


@pytest.mark.parametrize(
    ("call", "error", "quoted"),
    [
        (lambda: with_metrics(5), InvalidType, "app=5"),
        (lambda: with_metrics(hello_app, path="metrics"), InvalidValue, "path='metrics'"),
        (lambda: ResguardCollector(readiness=5), InvalidType, "readiness=5"),
        (lambda: ResguardCollector(ladder="l"), InvalidType, "ladder='l'"),
    ],
)
def test_bad_arguments_are_clear_errors(
    call: Callable[[], object], error: type[Exception], quoted: str
) -> None:
    with pytest.raises(error, match=quoted):
        call()
