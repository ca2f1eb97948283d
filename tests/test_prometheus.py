"""resguard.prometheus scraped over a real prometheus_client HTTP endpoint on loopback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from resguard import InvalidType, InvalidValue, ResguardError, ResourceExhausted, snapshot, testing
from resguard.cache import LRUCache
from resguard.guard import REFUSAL_REASONS, Guard
from resguard.models import LazyModel, ModelPool
from resguard.monitor import Monitor, State
from resguard.prometheus import METRICS, ResguardCollector, serve
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import (
    ContainersInfo,
    ContainerStats,
    Fault,
    OllamaModelInfo,
    Sampler,
    Snapshot,
)
from resguard.testing import ManualClock, make_container, make_snapshot
from resguard.testing.nvml import make_gpu
from resguard.testing.ollama import OllamaStandIn

from support import wait_until

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Fetch the exposition text and parse it with prometheus_client's own parser."""
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def quiet_policy() -> Policy:
    return Policy([Threshold("memory.percent", ">", 99.9, level=Level.CRITICAL)])


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    with Monitor(
        interval="50ms", policy=quiet_policy(), reclaim=False, slow_interval="100ms"
    ) as running:
        yield running


def test_machine_figures_match_a_snapshot_taken_at_the_same_time() -> None:
    with serve(0) as server:
        assert server.addr == "127.0.0.1"
        samples = scrape(server.url)
        snap = snapshot(children=False)
    memory = snap.memory
    assert value(samples, "resguard_memory_limit_bytes", source=memory.source) == memory.limit
    assert value(samples, "resguard_memory_total_bytes") == memory.total
    tolerance = max(128 * MIB, 0.02 * memory.limit)  # other programs keep running
    assert value(samples, "resguard_memory_used_bytes") == pytest.approx(memory.used, abs=tolerance)
    assert value(samples, "resguard_memory_available_bytes") == pytest.approx(
        memory.available, abs=tolerance
    )
    assert value(samples, "resguard_memory_used_percent") == pytest.approx(
        memory.percent, abs=100 * tolerance / memory.limit
    )
    assert value(samples, "resguard_cpu_effective") == snap.cpu.effective
    assert value(samples, "resguard_process_rss_bytes") == pytest.approx(
        snap.process.rss, abs=64 * MIB
    )
    if snap.pressure.memory is not None:
        some = value(samples, "resguard_pressure_avg10_percent", resource="memory", kind="some")
        assert 0 <= some <= 100
    assert "resguard_verdict_level" not in names(samples)  # no monitor, no verdict


def test_everything_a_service_registers_is_exported(monitor: Monitor) -> None:
    api = Guard(max_concurrent=1, name="api")
    cache: LRUCache[str, bytes] = LRUCache(max_bytes="1MiB", name="embeddings")
    cache["a"] = b"x" * 1000
    cache["b"] = b"y" * 1000
    assert cache["a"] == b"x" * 1000
    assert cache.get("missing") is None
    lazy = LazyModel(lambda: "weights", size="5MiB", name="tiny", sweep=False, register=False)
    lazy.get()
    pool = ModelPool(budget="1GiB")
    pooled = pool.lazy(lambda: "other", size="7MiB", name="pooled")
    collector = ResguardCollector(monitor, guards=[api], caches=[cache], models=[lazy, pool])
    with serve(0, collector=collector) as server:
        with api.admit(reserve="10MiB"):
            with pytest.raises(ResourceExhausted) as refused:
                with api.admit():
                    pass
            during = scrape(server.url)
        after = scrape(server.url)
        state = monitor.state

    assert refused.value.reason == "concurrency"
    assert value(during, "resguard_guard_in_flight", guard="api") == 1
    assert value(during, "resguard_guard_reserved_bytes", guard="api") == 10 * MIB
    assert value(after, "resguard_guard_in_flight", guard="api") == 0
    assert value(after, "resguard_guard_reserved_bytes", guard="api") == 0
    stats = api.stats()
    assert value(after, "resguard_guard_admitted_total", guard="api") == stats.admitted == 1
    assert value(after, "resguard_guard_refused_total", guard="api", reason="concurrency") == 1
    assert value(after, "resguard_guard_waiting", guard="api") == 0

    cache_stats = cache.stats()
    assert value(after, "resguard_cache_bytes", cache="embeddings") == cache_stats.bytes > 0
    assert value(after, "resguard_cache_items", cache="embeddings") == 2
    assert value(after, "resguard_cache_hits_total", cache="embeddings") == 1
    assert value(after, "resguard_cache_misses_total", cache="embeddings") == 1
    assert value(after, "resguard_cache_hit_ratio", cache="embeddings") == pytest.approx(0.5)

    assert value(after, "resguard_model_loaded", model="tiny", source="lazy") == 1
    assert value(after, "resguard_model_loaded_bytes", model="tiny", source="lazy") == 5 * MIB
    assert value(after, "resguard_model_loaded", model="pooled", source="lazy") == 0
    pooled.get()
    assert pooled.loaded
    assert value(after, "resguard_verdict_level") == int(state.verdict.level) == 0
    assert value(after, "resguard_verdict_breaches") == 0
    assert (
        value(after, "resguard_memory_limit_bytes", source=state.snapshot.memory.source)
        == state.snapshot.memory.limit
    )


def test_ollama_models_of_the_monitor_snapshot_are_exported(ollama_server: OllamaStandIn) -> None:
    from resguard.ollama import OllamaModels

    with OllamaModels(ollama_server.host, timeout=10, register=False) as models:
        models.ensure("qwen2.5:0.5b")
        loaded = {info.name: info for info in models.loaded()}
        with Monitor(
            interval="50ms",
            policy=quiet_policy(),
            reclaim=False,
            slow_interval="50ms",
            sources=[models.as_source()],
        ) as mon:
            wait_until(
                lambda: bool(mon.state.snapshot.ollama),
                timeout_s=30,
                what="a monitor sample with the Ollama models",
            )
            with serve(0, collector=ResguardCollector(mon)) as server:
                samples = scrape(server.url)
    info = loaded["qwen2.5:0.5b"]
    assert value(samples, "resguard_model_loaded", model=info.name, source="ollama") == 1
    assert (
        value(samples, "resguard_model_loaded_bytes", model=info.name, source="ollama") == info.size
    )
    assert value(samples, "resguard_model_vram_bytes", model=info.name) == info.size_vram


class _FrozenMonitor:
    """A monitor stand-in holding one State, to show container figures without an engine."""

    def __init__(self, state: State) -> None:
        self.state = state


class _BrokenCache:
    name = "broken"

    def stats(self) -> Any:
        raise OSError("cache went away")


def test_container_figures_and_scrape_errors() -> None:
    item = ContainerStats(
        id="abc",
        name="db",
        image="postgres",
        status="running",
        memory_usage=300 * MIB,
        memory_used=250 * MIB,
        memory_limit=512 * MIB,
        memory_percent=48.8,
        cpu_percent=3.0,
        pids=7,
    )
    unlimited = attrs.evolve(item, id="def", name="cache", memory_limit=None, memory_percent=None)
    snap = attrs.evolve(snapshot(), containers=ContainersInfo.from_items((item, unlimited)))
    verdict = quiet_policy().evaluate(snap)
    collector = ResguardCollector(_FrozenMonitor(State(snap, verdict, 1)), caches=[_BrokenCache()])
    with serve(0, collector=collector) as server:
        samples = scrape(server.url)
    assert value(samples, "resguard_container_memory_used_bytes", container="db") == 250 * MIB
    assert value(samples, "resguard_container_memory_limit_bytes", container="db") == 512 * MIB
    assert ("resguard_container_memory_limit_bytes", (("container", "cache"),)) not in samples
    assert value(samples, "resguard_scrape_errors_total", part="cache") == 1
    assert (
        value(samples, "resguard_memory_limit_bytes", source=snap.memory.source)
        == snap.memory.limit
    )


def test_every_documented_metric_is_exposed_and_every_exposed_one_documented(
    monitor: Monitor,
) -> None:
    docs = (ROOT / "docs" / "prometheus.md").read_text()
    import resguard.prometheus as module

    documented = set(re.findall(r"resguard_[a-z0-9_]+", docs))
    assert set(METRICS) <= documented
    assert set(METRICS) <= set(re.findall(r"resguard_[a-z0-9_]+", module.__doc__ or ""))

    guard = Guard(max_concurrent=1, name="g")
    with guard.admit(), pytest.raises(ResourceExhausted), guard.admit():
        pass
    cache: LRUCache[str, int] = LRUCache(max_items=2, name="c")
    lazy = LazyModel(lambda: 1, size=1, name="m", sweep=False, register=False)
    item = ContainerStats(
        id="abc",
        name="db",
        image="i",
        status="running",
        memory_usage=1,
        memory_used=1,
        memory_limit=2,
        memory_percent=50.0,
        cpu_percent=None,
        pids=None,
    )
    snap = attrs.evolve(
        monitor.state.snapshot,
        containers=ContainersInfo.from_items((item,)),
        ollama=(OllamaModelInfo("x:1b", 10, 5, None, None),),
        faults=(Fault("swap", "/proc/meminfo", "garbage", "x"),),
        pressure=attrs.evolve(monitor.state.snapshot.pressure, memory_level=2),  # macOS's
        # a first sample has no CPU window yet (unknown): give the CPU gauges a figure
        cpu=attrs.evolve(monitor.state.snapshot.cpu, percent=12.5),
        process=attrs.evolve(monitor.state.snapshot.process, cpu_percent=3.0),
        # the working set is a cgroup's figure
        memory=attrs.evolve(monitor.state.snapshot.memory, source="cgroup"),
        gpus=(make_gpu(0),),
    )
    frozen = _FrozenMonitor(State(snap, monitor.state.verdict, 1))
    collector = ResguardCollector(
        frozen,
        guards=[guard],
        caches=[cache, _BrokenCache()],
        models=[lazy],
        readiness=lambda: {"status": "ready"},
        ladder=monitor.ladder,
    )
    with serve(0, collector=collector) as server:
        exposed = names(scrape(server.url))
    missing = set(METRICS) - exposed
    # PSI needs a kernel with /proc/pressure; CPU's full line needs 5.13
    if snap.pressure.memory is None:
        missing -= {name for name in METRICS if name.startswith("resguard_pressure_")}
    elif snap.pressure.cpu is not None and snap.pressure.cpu.full is None:
        missing.discard("resguard_pressure_cpu_stalled_seconds_total")
    # histograms expose _bucket/_sum/_count samples, named after the family
    for histogram in ("resguard_guard_admission_wait_seconds",):
        if {f"{histogram}_bucket", f"{histogram}_count", f"{histogram}_sum"} <= exposed:
            missing.discard(histogram)
            exposed -= {f"{histogram}_bucket", f"{histogram}_count", f"{histogram}_sum"}
    assert not missing
    assert {name for name in exposed if name.startswith("resguard_")} <= set(METRICS)


def test_bad_port_is_refused() -> None:
    with pytest.raises(InvalidValue, match="70000"):
        serve(70000)


@pytest.mark.parametrize(
    ("call", "error", "quoted"),
    [
        (lambda: serve("9108"), InvalidType, "port='9108'"),  # type: ignore[arg-type]
        (lambda: serve(True), InvalidType, "port=True"),
        (lambda: serve(0, addr=5), InvalidType, "addr=5"),  # type: ignore[arg-type]
        (lambda: serve(0, addr="nonsense::host"), InvalidValue, "addr='nonsense::host'"),
        (lambda: serve(0, collector=[5]), InvalidType, "5"),  # type: ignore[list-item]
        (lambda: ResguardCollector(monitor=5), InvalidType, "monitor=5"),
        (lambda: ResguardCollector(guards=5), InvalidType, "guards=5"),  # type: ignore[arg-type]
        (lambda: ResguardCollector(guards=["g"]), InvalidType, "'g'"),
        (lambda: ResguardCollector(caches=[object]), InvalidType, "object"),
        (lambda: ResguardCollector(models=[3]), InvalidType, "3"),
        (lambda: ResguardCollector(sampler="s"), InvalidType, "sampler='s'"),  # type: ignore[arg-type]
        (lambda: ResguardCollector(clock=1.0), InvalidType, "clock=1.0"),  # type: ignore[arg-type]
    ],
)
def test_bad_collector_and_server_arguments_are_in_the_error_tree(
    call: Any, error: type[Exception], quoted: str
) -> None:
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, ResguardError)
    assert quoted in str(info.value)


def test_a_taken_port_is_an_error_that_says_so() -> None:
    with serve(0) as first:
        with pytest.raises(InvalidValue, match=f"port={first.port}"):
            serve(first.port)


def test_repeated_names_become_distinct_series() -> None:
    first, second = Guard(name="guard"), Guard(name="guard")
    with first.admit():
        pass
    collector = ResguardCollector(guards=[first, second])
    with serve(0, collector=collector) as server:
        samples = scrape(server.url)
    assert value(samples, "resguard_guard_admitted_total", guard="guard") == 1
    assert value(samples, "resguard_guard_admitted_total", guard="guard#2") == 0


def unknown_memory(snap: Snapshot) -> Snapshot:
    """*snap* as an empty /proc/meminfo leaves it: memory and swap numbers unknown."""
    memory, swap = testing.MEMINFO_EMPTY, Fault("swap", "/proc/meminfo", "empty", "no data")
    return testing.unknown_memory(snap, memory, swap, swap=True)


def test_unknown_figures_are_absent_never_zero() -> None:
    snap = unknown_memory(snapshot())
    verdict = quiet_policy().evaluate(snap)
    collector = ResguardCollector(_FrozenMonitor(State(snap, verdict, 1)))
    with serve(0, collector=collector) as server:
        response = httpx.get(server.url, timeout=30)
        samples = scrape(server.url)
    for name in (
        "resguard_memory_used_bytes",
        "resguard_memory_available_bytes",
        "resguard_memory_total_bytes",
        "resguard_memory_used_percent",
        "resguard_swap_used_bytes",
    ):
        assert name not in names(samples), name
        assert f"# TYPE {name} gauge" in response.text  # described, without a sample
    assert "resguard_memory_limit_bytes" not in names(samples)
    assert value(samples, "resguard_sensing_up") == 0
    assert value(samples, "resguard_sensing_faults", field="memory", kind="empty") == 1
    assert value(samples, "resguard_verdict_unknown") == len(verdict.unknown)
    assert value(samples, "resguard_process_rss_bytes") > 0  # what is known still is


def test_a_damaged_source_with_a_stand_in_is_listed_but_sensing_stays_up() -> None:
    snap = snapshot()
    fault = Fault("process.rss", "/proc/self/stat", "garbage", "x", fallback="/proc/self/statm")
    snap = attrs.evolve(snap, faults=(fault,))
    collector = ResguardCollector(_FrozenMonitor(State(snap, quiet_policy().evaluate(snap), 1)))
    with serve(0, collector=collector) as server:
        samples = scrape(server.url)
    assert value(samples, "resguard_sensing_up") == 1
    assert value(samples, "resguard_sensing_faults", field="process.rss", kind="garbage") == 1


def test_sensing_is_up_when_everything_is_known(monitor: Monitor) -> None:
    with serve(0, collector=ResguardCollector(monitor)) as server:
        samples = scrape(server.url)
    assert value(samples, "resguard_sensing_up") == 1
    assert value(samples, "resguard_state_age_seconds") < 5
    assert not [key for key in samples if key[0] == "resguard_sensing_faults"]


def test_a_stale_state_marks_sensing_down_and_hides_the_old_verdict() -> None:
    snap = snapshot()
    clock = ManualClock(snap.monotonic)
    state = State(snap, quiet_policy().evaluate(snap), 1)
    collector = ResguardCollector(_FrozenMonitor(state), clock=clock)
    with serve(0, collector=collector) as server:
        fresh = scrape(server.url)
        clock.advance(30)
        stale = scrape(server.url)
    assert value(fresh, "resguard_sensing_up") == 1
    assert "resguard_verdict_level" in names(fresh)
    assert value(stale, "resguard_sensing_up") == 0
    assert value(stale, "resguard_state_age_seconds") == pytest.approx(30)
    assert "resguard_verdict_level" not in names(stale)


class _BrokenSampler(Sampler):
    def sample(self, *, uss: bool = False, children: bool = True) -> Snapshot:
        raise OSError("sampling broke")


def test_a_snapshot_that_fails_is_a_scrape_error_not_a_failed_scrape() -> None:
    collector = ResguardCollector(guards=[Guard(name="g")], sampler=_BrokenSampler())
    with serve(0, collector=collector) as server:
        scrape(server.url)
        samples = scrape(server.url)
    assert value(samples, "resguard_scrape_errors_total", part="snapshot") == 2
    assert value(samples, "resguard_sensing_up") == 0
    assert "resguard_memory_used_bytes" not in names(samples)
    assert value(samples, "resguard_guard_admitted_total", guard="g") == 0


def test_every_refusal_reason_is_a_label_from_the_first_scrape() -> None:
    guard = Guard(max_concurrent=1, name="g")
    with guard.admit(), pytest.raises(ResourceExhausted), guard.admit():
        pass
    with serve(0, collector=ResguardCollector(guards=[guard])) as server:
        samples = scrape(server.url)
    refused = {
        dict(labels)["reason"]: count
        for (name, labels), count in samples.items()
        if name == "resguard_guard_refused_total"
    }
    assert set(refused) == set(REFUSAL_REASONS)
    assert refused["concurrency"] == 1
    assert sum(refused.values()) == 1


class _CountingBrokenCache:
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def stats(self) -> Any:
        self.calls += 1
        raise RuntimeError(f"stats broke on call {self.calls}")


def test_a_part_failing_with_a_new_message_each_scrape_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    cache = _CountingBrokenCache()
    collector = ResguardCollector(caches=[cache], sampler=_BrokenSampler())
    caplog.set_level(logging.WARNING, logger="resguard")
    for _ in range(20):
        list(collector.collect())
    assert cache.calls == 20
    assert sum("stats broke" in record.getMessage() for record in caplog.records) == 1
    assert sum("sampling broke" in record.getMessage() for record in caplog.records) == 1


def test_the_snapshot_figures_names_take_their_unit_from_the_snapshot_fields() -> None:
    """The _bytes/_percent suffixes come from resguard.snapshot.metric_unit, not a list of
    their own: the names are still the documented ones."""
    snap = make_snapshot(
        containers=(make_container("db", memory_used=250 * MIB, memory_limit=512 * MIB),)
    )
    state = State(snap, quiet_policy().evaluate(snap), 1)
    names = {family.name for family in ResguardCollector(_FrozenMonitor(state)).collect()}
    assert {
        "resguard_memory_limit_bytes",
        "resguard_memory_used_bytes",
        "resguard_memory_available_bytes",
        "resguard_memory_total_bytes",
        "resguard_memory_used_percent",
        "resguard_swap_used_bytes",
        "resguard_cpu_percent",
        "resguard_cpu_effective",
        "resguard_pressure_avg10_percent",
        "resguard_process_rss_bytes",
        "resguard_process_cpu_percent",
        "resguard_container_memory_used_bytes",
        "resguard_container_memory_limit_bytes",
    } <= names
    assert {name.removesuffix("_total") for name in METRICS} >= names
