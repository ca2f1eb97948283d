"""Implausible NVML readings are unknown (issue 16, round 2, R1 #12): an infinite or
1e9 % utilisation, -300 °C, more memory used than the board has passed the probe, and a
snapshot's to_dict() then failed json.dumps(allow_nan=False)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard._probes.gpu import PLAUSIBLE, memory_readings, plausible
from resguard.snapshot import Sampler
from resguard.testing.nvml import FakeGpu, FakeNVML

GiB = 1 << 30


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"utilization_percent": math.inf}, "utilization_percent"),
        ({"utilization_percent": 1e9}, "utilization_percent"),
        ({"utilization_percent": -1}, "utilization_percent"),
        ({"temperature_celsius": -math.inf}, "temperature_celsius"),
        ({"temperature_celsius": -300}, "temperature_celsius"),
        ({"temperature_celsius": 10_000}, "temperature_celsius"),
        ({"memory_used_bytes": 20 * GiB}, "memory_used_bytes"),
    ],
)
def test_an_implausible_reading_is_unknown_with_one_warning_and_the_snapshot_stays_json(
    given: dict[str, Any], field: str, caplog: pytest.LogCaptureFixture
) -> None:
    sampler = Sampler(nvml=FakeNVML([FakeGpu(memory_total_bytes=16 * GiB, **given)]))
    with caplog.at_level(logging.WARNING, logger="resguard"):
        first = sampler.sample()
        second = sampler.sample()
    for snap in (first, second):
        assert snap.gpus is not None
        assert getattr(snap.gpus[0], field) is None
        json.dumps(snap.to_dict(), allow_nan=False)
    assert first.gpus is not None
    assert first.gpus[0].memory_total_bytes == 16 * GiB  # the rest is kept
    warned = [r.getMessage() for r in caplog.records if field in r.getMessage()]
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"GPU 0: NVML reported {field} = ")


def test_plausible_readings_are_kept() -> None:
    gpu = FakeGpu(memory_total_bytes=16 * GiB, memory_used_bytes=16 * GiB,
                  utilization_percent=100, temperature_celsius=-5)  # fmt: skip
    snap = Sampler(nvml=FakeNVML([gpu])).sample()
    assert snap.gpus is not None
    info = snap.gpus[0]
    assert (info.utilization_percent, info.temperature_celsius) == (100.0, -5.0)
    assert (info.memory_used_bytes, info.memory_free_bytes) == (16 * GiB, 0)


@given(st.sampled_from(sorted(PLAUSIBLE)), st.floats(allow_nan=True, allow_infinity=True))
def test_a_reading_is_kept_exactly_when_finite_and_in_its_range(field: str, value: float) -> None:
    low, high = PLAUSIBLE[field]
    assert plausible(field, value) == (value if low <= value <= high else None)
    assert plausible(field, None) is None


@given(
    st.none() | st.integers(0, 2**50), st.none() | st.integers(0, 2**50),
    st.none() | st.integers(0, 2**50),
)  # fmt: skip
def test_used_or_free_above_the_total_is_unknown(
    total: int | None, used: int | None, free: int | None
) -> None:
    kept = memory_readings(total, used, free)
    assert kept[0] == total
    for read, value in zip((used, free), kept[1:], strict=True):
        fits = read is None or total is None or read <= total
        assert value == (read if fits else None)
