"""What ``resguard snapshot`` says without GPU readings, and a model's GPU share as
``ollama ps`` prints it (issue 16, round 2, R3 #9): with nvidia-ml-py installed and no
driver it told the user to install the extra they had; ``gpu_percent`` was 51.99999997."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard._probes import gpu as probe
from resguard.cli.snapshot import NO_GPU_READINGS, no_gpu_readings
from resguard.snapshot import gpu_percent, ollama_processor

_find_spec = importlib.util.find_spec


def pynvml_installed(monkeypatch: pytest.MonkeyPatch, installed: bool) -> None:
    def find_spec(name: str, *args: Any) -> Any:
        if name == "pynvml":
            return _find_spec("json") if installed else None
        return _find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_without_the_extra_the_line_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    pynvml_installed(monkeypatch, False)
    assert no_gpu_readings() == NO_GPU_READINGS
    assert "pip install 'resguard[gpu]'" in NO_GPU_READINGS


def test_with_the_extra_and_no_driver_the_line_says_no_driver_and_no_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pynvml_installed(monkeypatch, True)
    monkeypatch.setattr(sys, "platform", "linux")  # where a loaded driver shows in /proc
    monkeypatch.setattr(probe, "DRIVER_DIR", str(tmp_path / "absent"))
    text = no_gpu_readings()
    assert text.startswith("unknown (no NVIDIA driver loaded")
    assert "pip install" not in text
    monkeypatch.setattr(probe, "DRIVER_DIR", str(tmp_path))  # a driver, but no readings
    assert "pip install" not in no_gpu_readings()
    assert no_gpu_readings().startswith("unknown (NVML gave no readings")


def test_the_gpu_share_is_whole_percent_as_ollama_ps_prints_it() -> None:
    size = 10**10
    assert gpu_percent(size, 5_199_999_997) == 52.0
    assert ollama_processor(size, 5_199_999_997) == "48%/52% CPU/GPU"


@given(st.integers(1, 2**45).flatmap(lambda size: st.tuples(st.just(size), st.integers(0, size))))
def test_the_gpu_share_is_a_whole_percent_that_agrees_with_the_processor_column(
    sizes: tuple[int, int],
) -> None:
    size, vram = sizes
    share = gpu_percent(size, vram)
    assert share is not None
    assert share.is_integer()
    assert 0 <= share <= 100
    column = ollama_processor(size, vram)
    if column.endswith("CPU/GPU"):
        assert column.endswith(f"/{share:.0f}% CPU/GPU")
    else:
        assert share == (100.0 if column == "100% GPU" else 0.0)
