"""The Monitor's level-change log line says each level once: ``level OK -> WARNING:
memory-warning …``, not ``WARNING: WARNING: …``; ``level WARNING -> OK``, not ``…: OK``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from resguard.monitor import Monitor
from test_monitor import FixedMachine, two_levels


def test_a_level_change_is_logged_without_repeating_the_level(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    machine = FixedMachine(tmp_path)
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, reclaim=False)
    caplog.set_level(logging.INFO, logger="resguard")
    for percent in (60, 30):
        machine.set_used_percent(percent)
        monitor.sample_now()
    lines = [record.getMessage() for record in caplog.records if "level " in record.getMessage()]
    assert len(lines) == 2, lines
    up, down = lines
    assert up.startswith("level OK -> WARNING: ")
    assert "WARNING: WARNING" not in up
    assert up.count("WARNING") == 1
    assert "memory" in up
    assert down == "level WARNING -> OK"
