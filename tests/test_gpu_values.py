"""The GPU values: ``ollama ps``'s PROCESSOR text, the VRAM share and the fullest-device summary."""

from __future__ import annotations

import decimal

import attrs
from hypothesis import given
from hypothesis import strategies as st

from resguard.snapshot import (
    GpuInfo,
    GpuSummary,
    OllamaModelInfo,
    gpu_percent,
    metric_unit,
    ollama_processor,
)
from resguard.testing import make_snapshot


def _gpu(index: int, total: int | None, used: int | None) -> GpuInfo:
    free = None if total is None or used is None else total - used
    return GpuInfo(index, "NVIDIA Test", f"GPU-{index}", total, used, free, 10.0, 50.0)


def test_processor_prints_the_three_forms_ollama_ps_prints() -> None:
    assert ollama_processor(1000, 0) == "100% CPU"
    assert ollama_processor(1000, 1000) == "100% GPU"
    assert ollama_processor(1000, 520) == "48%/52% CPU/GPU"
    assert ollama_processor(1000, 1001) == "Unknown"
    assert ollama_processor(0, 0) == "100% CPU"  # ollama tests size_vram == 0 first


def test_processor_rounds_the_cpu_share_half_away_from_zero_as_go_does() -> None:
    assert ollama_processor(200, 101) == "50%/50% CPU/GPU"  # 49.5 % CPU: Go rounds up
    assert ollama_processor(200, 99) == "51%/49% CPU/GPU"  # 50.5 % CPU (round() says 50)


@given(st.integers(1, 10**13), st.data())
def test_processor_split_sums_to_100_and_matches_exact_rounding(
    size: int, data: st.DataObject
) -> None:
    vram = data.draw(st.integers(1, size - 1)) if size > 1 else 0
    text = ollama_processor(size, vram)
    if vram == 0:
        assert text == "100% CPU"
        return
    cpu_text, gpu_text = text.removesuffix(" CPU/GPU").split("/")
    cpu, gpu = int(cpu_text.rstrip("%")), int(gpu_text.rstrip("%"))
    exact = decimal.Decimal(size - vram) * 100 / decimal.Decimal(size)
    assert cpu == int(exact.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))
    assert cpu + gpu == 100


def test_ollama_model_info_carries_its_split_and_recomputes_it_when_evolved() -> None:
    model = OllamaModelInfo("qwen:7b", 1000, 520, None, None)
    assert (model.processor, model.gpu_percent) == ("48%/52% CPU/GPU", 52.0)
    moved = attrs.evolve(model, size_vram=1000)
    assert (moved.processor, moved.gpu_percent) == ("100% GPU", 100.0)
    assert model.to_dict()["processor"] == "48%/52% CPU/GPU"
    assert metric_unit("ollama.gpu_percent") == "percent"


def test_gpu_percent_is_unknown_for_sizes_that_cannot_be() -> None:
    assert gpu_percent(0, 0) is None
    assert gpu_percent(100, 101) is None
    assert gpu_percent(100, 25) == 25.0


def test_summary_judges_the_fullest_device_not_the_sum() -> None:
    gpus = (_gpu(0, 100, 10), _gpu(1, 100, 95), _gpu(2, None, None))
    summary = GpuSummary.from_gpus(gpus)
    assert summary is not None
    assert summary.memory is not None
    assert (summary.count, summary.memory.device, summary.memory.percent) == (3, 1, 95.0)
    assert (summary.memory.used, summary.memory.free, summary.memory.total) == (95, 5, 100)


def test_unknown_gpus_are_none_and_no_device_is_an_empty_summary() -> None:
    snap = make_snapshot()
    assert snap.gpus is None
    assert snap.gpu is None
    none = attrs.evolve(snap, gpus=())
    assert none.gpu == GpuSummary(0, None)
    unread = attrs.evolve(snap, gpus=(_gpu(0, None, None),))
    assert unread.gpu == GpuSummary(1, None)
    assert unread.gpus is not None
    assert unread.gpus[0].memory_percent is None


def test_snapshot_gpu_figures_are_rule_paths_with_units() -> None:
    snap = attrs.evolve(make_snapshot(), gpus=(_gpu(0, 1 << 30, 1 << 29),))
    assert snap.gpu is not None
    assert snap.gpu.memory is not None
    assert snap.gpu.memory.percent == 50.0
    assert metric_unit("gpu.memory.used") == "bytes"
    assert metric_unit("gpu.memory.percent") == "percent"
    assert metric_unit("gpus.temperature_celsius") == "celsius"


@given(st.lists(st.one_of(st.none(), st.integers(0, 1000)), max_size=6))
def test_summary_is_the_device_with_the_highest_known_share(used: list[int | None]) -> None:
    gpus = tuple(_gpu(i, None if u is None else 1000, u) for i, u in enumerate(used))
    summary = GpuSummary.from_gpus(gpus)
    assert summary is not None
    assert summary.count == len(used)
    known = [(u, i) for i, u in enumerate(used) if u is not None]
    if not known:
        assert summary.memory is None
        return
    assert summary.memory is not None
    best = max(u for u, _ in known)
    assert summary.memory.used == best
    assert summary.memory.device == min(i for u, i in known if u == best)  # first on a tie


def test_nvmls_raw_readings_land_in_the_fields_of_their_names() -> None:
    from resguard._probes.gpu import RawGpu
    from resguard.snapshot._gpu import _info

    # every reading distinct, so a copy by position into a reordered class would show
    raw = RawGpu(3, "NVIDIA H200", "GPU-3", 1000, 400, 600, 12.5, 61.0, ((42, 300), (43, None)))
    info = _info(raw)
    assert (info.index, info.name, info.uuid) == (3, "NVIDIA H200", "GPU-3")
    assert (info.memory_total_bytes, info.memory_used_bytes, info.memory_free_bytes) == (
        1000,
        400,
        600,
    )
    assert (info.utilization_percent, info.temperature_celsius) == (12.5, 61.0)
    assert info.processes is not None
    assert [(p.pid, p.used_bytes) for p in info.processes] == [(42, 300), (43, None)]
    assert _info(raw._replace(processes=None)).processes is None  # could not be listed
