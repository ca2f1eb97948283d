"""Prometheus's own tool judges what resguard ships: a real scrape passes ``promtool check
metrics`` and keeps the naming conventions, the alert rules pass ``promtool check rules``,
and ``promtool test rules`` fires each alert on series that should fire it (and only there)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]

from resguard import ResourceExhausted
from resguard.guard import REFUSAL_REASONS, Guard
from resguard.monitor import Monitor
from resguard.prometheus import DEPRECATED, ResguardCollector, serve
from resguard.rules import Level, Policy, Threshold
from resguard.snapshot import Sampler
from resguard.testing.nvml import FakeGpu, FakeNVML

from plugins.integration import unavailable

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "resguard-rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "resguard-rules.test.yml"


def promtool() -> str:
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        unavailable("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def run_promtool(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd
    )


@pytest.fixture(scope="module")
def exposition() -> str:
    """One real scrape of everything a service registers, with a monitor (sampling a
    pretend NVML's GPU) and a refusal."""
    policy = Policy([Threshold("memory.percent", ">", 99.9, level=Level.CRITICAL)])
    sampler = Sampler(nvml=FakeNVML([FakeGpu(memory_used_bytes=4 << 30, utilization_percent=30)]))
    with Monitor(interval="50ms", policy=policy, reclaim=False, sampler=sampler) as monitor:
        guard = Guard(max_concurrent=1, name="api", monitor=monitor)
        with guard.admit(), pytest.raises(ResourceExhausted), guard.admit():
            pass
        collector = ResguardCollector(monitor, guards=[guard], readiness=lambda: True)
        with serve(0, collector=collector) as server:
            response = httpx.get(server.url, timeout=30)
    assert response.status_code == 200
    return response.text


def test_a_real_scrape_passes_promtool_check_metrics(exposition: str) -> None:
    done = run_promtool("check", "metrics", stdin=exposition)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""  # not even a lint hint
    assert done.stderr.strip() == ""


def test_the_scrape_keeps_the_naming_conventions(exposition: str) -> None:
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.MULTILINE))
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", exposition, flags=re.MULTILINE))
    resguard = {name: kind for name, kind in types.items() if name.startswith("resguard_")}
    for name, kind in resguard.items():
        if kind == "counter":
            assert name.endswith("_total"), name
        if name.endswith("_percent"):  # only the deprecated ones, and they say so
            assert name in DEPRECATED, name
            assert helps[name].startswith(f"Deprecated, use {DEPRECATED[name]}"), helps[name]
            assert DEPRECATED[name].endswith("_ratio")
            assert DEPRECATED[name] in resguard
    assert resguard["resguard_guard_admission_wait_seconds"] == "histogram"
    for reason in REFUSAL_REASONS:  # every label value from the first scrape
        assert f'resguard_guard_refused_total{{guard="api",reason="{reason}"}}' in exposition
    assert "resguard_oom_kills_total 0.0" in exposition
    assert re.search(
        r'^resguard_reclaim_freed_bytes_total\{step="gc.collect"\} 0\.0$', exposition, re.MULTILINE
    )
    assert re.search(r"^resguard_ready 1\.0$", exposition, re.MULTILINE)
    assert 'resguard_gpu_utilization_ratio{gpu="0"} 0.3' in exposition
    ratio = float(re.findall(r"^resguard_memory_used_ratio (\S+)$", exposition, re.MULTILINE)[0])
    percent = float(
        re.findall(r"^resguard_memory_used_percent (\S+)$", exposition, re.MULTILINE)[0]
    )
    assert 0 < ratio < 1
    assert percent == pytest.approx(ratio * 100)


def test_the_alert_rules_pass_promtool_check_rules() -> None:
    done = run_promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_the_rules_tests_fire_each_alert() -> None:
    done = run_promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == alerts  # every alert has a case where it fires


@pytest.mark.parametrize(
    ("alert", "old", "new"),
    [
        (
            "ResguardMemoryHigh",
            "resguard_memory_used_ratio > 0.9",
            "resguard_memory_used_ratio > 0.99",
        ),
        ("ResguardMemoryPressureHigh", "[5m]) > 0.1", "[5m]) > 0.3"),
        ("ResguardSheddingLoad", ") > 0.05", ") > 0.5"),
        (
            "ResguardOOMKills",
            "increase(resguard_oom_kills_total[5m]) > 0",
            "increase(resguard_oom_kills_total[5m]) > 1",
        ),
        ("ResguardSensingDown", "resguard_sensing_up == 0", "resguard_sensing_up == -1"),
        (
            "ResguardContainerOOMKilled",
            '{reason="OOMKilled"} == 1',
            '{reason="OOMKilled"} == 2',
        ),
        # an old OOM kill (no restart since) would fire for ever
        (
            "ResguardContainerOOMKilled",
            "increase(kube_pod_container_status_restarts_total[10m]) > 0",
            "increase(kube_pod_container_status_restarts_total[10m]) >= 0",
        ),
        # a pod that exports no resguard series is not one of resguard's
        (
            "ResguardContainerOOMKilled",
            "group by (namespace, pod) (last_over_time(resguard_sensing_up[1h]))",
            "group by (namespace, pod) (kube_pod_container_status_restarts_total)",
        ),
    ],
)
def test_the_rules_tests_fail_on_rules_that_do_not_fire(
    tmp_path: Path, alert: str, old: str, new: str
) -> None:
    """The rules tests can fail: with one alert's threshold moved out of reach (or a filter
    dropped, so it fires where it should not), promtool reports that alert."""
    text = RULES.read_text()
    assert text.count(old) == 1, old
    (tmp_path / RULES.name).write_text(text.replace(old, new))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    done = run_promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert done.returncode != 0
    assert alert in done.stdout + done.stderr
