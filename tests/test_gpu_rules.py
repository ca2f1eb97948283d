"""Rules on VRAM: ``gpu.memory.*`` figures of the fullest GPU, shares of its total."""

from __future__ import annotations

import attrs
import pytest

from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import Snapshot
from resguard.testing import make_snapshot
from resguard.testing.nvml import make_gpu

GIB = 1 << 30


def _at(*percents: float) -> Snapshot:
    gpus = tuple(make_gpu(i, used_percent=p, total_bytes=8 * GIB) for i, p in enumerate(percents))
    return attrs.evolve(make_snapshot(), gpus=gpus)


def test_a_percent_rule_fires_on_the_fullest_gpu() -> None:
    policy = Policy([Threshold("gpu.memory.percent", ">", 90, level=Level.CRITICAL)])
    assert policy.evaluate(_at(10, 95)).level == Level.CRITICAL
    assert policy.evaluate(_at(10, 85)).level == Level.OK


def test_a_byte_share_on_gpu_memory_is_of_the_gpus_total_not_the_memory_limit() -> None:
    policy = Policy([Threshold("gpu.memory.used", ">", "50%")])
    verdict = policy.evaluate(_at(60))
    assert verdict.level == Level.WARNING
    assert verdict.breaches[0].threshold == pytest.approx(4 * GIB)  # half of 8 GiB, not of RAM
    assert policy.evaluate(_at(40)).level == Level.OK


def test_a_byte_size_on_gpu_memory_free() -> None:
    policy = Policy([Threshold("gpu.memory.free", "<", "1GiB")])
    assert policy.evaluate(_at(95)).level == Level.WARNING
    assert policy.evaluate(_at(50)).level == Level.OK


def test_unknown_gpus_never_fire_and_never_raise() -> None:
    policy = Policy([Threshold("gpu.memory.percent", ">", 90)])
    for snap in (make_snapshot(), attrs.evolve(make_snapshot(), gpus=())):
        assert policy.evaluate(snap).level == Level.OK
