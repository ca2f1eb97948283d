"""``resguard snapshot`` shows the GPUs, or says why it cannot."""

from __future__ import annotations

import json
import subprocess
import sys

import attrs

from resguard.cli.snapshot import format_snapshot, no_gpu_readings
from resguard.testing import make_snapshot
from resguard.testing.nvml import make_gpu

GIB = 1 << 30


def _gpu_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("gpu")]


def test_snapshot_lists_each_gpu() -> None:
    snap = attrs.evolve(
        make_snapshot(),
        gpus=(
            make_gpu(0, used_percent=25, total_bytes=140 * GIB, processes=[(9, GIB), (10, None)]),
        ),
    )
    assert _gpu_lines(format_snapshot(snap)) == [
        "gpu 0    NVIDIA Fake GPU: 35.0 GiB of 140.0 GiB (25.0%), 10% busy, 45 °C, 2 processes"
    ]


def test_snapshot_says_why_no_gpu_is_shown() -> None:
    assert _gpu_lines(format_snapshot(make_snapshot())) == [f"gpu      {no_gpu_readings()}"]
    none = attrs.evolve(make_snapshot(), gpus=())
    assert _gpu_lines(format_snapshot(none)) == ["gpu      NVML reports no GPU"]


def test_snapshot_json_has_gpus_even_unknown() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "resguard", "snapshot", "--window", "0.05", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    data = json.loads(out)
    assert "gpus" in data
    assert "gpu" in data
    assert data["gpus"] is None or isinstance(data["gpus"], list)
