"""Issue 14's acceptance for the machine's CPU: with every core burned by real processes,
the laptop preset's total-CPU rule (its 60 s shortened through a guardian config that
replaces the preset rule by name) fires in ``resguard watch --json`` and names burners."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from resguard import presets
from resguard.cli import main

TOTAL_RULE = "total CPU above 80% for 60s"


@pytest.fixture
def every_core_burned() -> Iterator[list[int]]:
    marker = f"total-cpu-{uuid.uuid4().hex[:8]}"
    children = [
        subprocess.Popen([sys.executable, "-c", "while 1: pass", marker])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield [child.pid for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait(timeout=10)


def test_the_preset_has_the_total_cpu_rule_this_test_shortens() -> None:
    assert TOTAL_RULE in [rule.name for rule in presets.laptop().rules]


def test_the_total_cpu_rule_fires_when_every_core_is_burned(
    tmp_path: Path, every_core_burned: list[int]
) -> None:
    config = tmp_path / "resguard.toml"
    config.write_text(
        '[guardian]\npreset = "laptop"\n\n[[guardian.rule]]\n'
        f'name = "{TOTAL_RULE}"\nmetric = "cpu.percent"\nop = ">"\nvalue = 80\n'
        'for = "2s"\nclear = 70\n'
    )
    out = io.StringIO()
    argv = ["watch", "--config", str(config), "--json", "--interval", "0.5", "--count", "10"]
    assert main(argv, out=out) == 0
    updates = [json.loads(line) for line in out.getvalue().splitlines()]
    fired = [
        breach
        for update in updates
        for breach in update["breaches"]
        if breach["rule"] == TOTAL_RULE
    ]
    totals = [update["snapshot"]["cpu"]["percent"] for update in updates]
    assert fired, f"the total-CPU rule never fired; cpu.percent per update: {totals}"
    named = {offender["pid"] for breach in fired for offender in breach["offenders"]}
    assert named & set(every_core_burned), (named, every_core_burned)
