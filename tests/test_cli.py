"""The command line, run as a user would: a real subprocess, real output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest


def resguard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resguard", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_snapshot_json() -> None:
    out = resguard("snapshot", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["memory"]["total"] == psutil.virtual_memory().total
    assert data["memory"]["source"] in ("host", "cgroup", "rlimit")
    assert set(data) >= {"memory", "swap", "cpu", "pressure", "process", "taken_at"}


def test_snapshot_text_names_the_limit_source() -> None:
    out = resguard("snapshot")
    assert out.returncode == 0, out.stderr
    assert "limit from" in out.stdout
    assert "pressure" in out.stdout


def test_top_json_by_memory() -> None:
    out = resguard("top", "-n", "3", "--by", "memory", "--json", "--interval", "0")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 3
    assert rows[0]["rss"] >= rows[1]["rss"] >= rows[2]["rss"]
    assert all(row["pid"] > 0 for row in rows)


def test_top_text_has_a_header() -> None:
    out = resguard("top", "-n", "2", "--group")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split()[:3] == ["PID", "CPU%", "RSS"]


@pytest.mark.parametrize("args", [["top", "-n", "-1"], ["top", "--by", "disk"],
                                  ["top", "--interval", "soon"], ["frobnicate"], []])
def test_bad_usage_exits_2_with_a_message(args: list[str]) -> None:
    out = resguard(*args)
    assert out.returncode == 2
    assert "usage:" in out.stderr


def test_watch_piped_prints_one_line_per_update() -> None:
    out = resguard("watch", "--count", "3", "--interval", "0.1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3
    assert all(" mem " in line and "|" in line for line in lines)


def test_watch_json_lines() -> None:
    out = resguard("watch", "--count", "2", "--interval", "0.1", "--json", "--preset", "service")
    assert out.returncode == 0, out.stderr
    updates = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(updates) == 2
    assert updates[0]["level"] in ("OK", "WARNING", "CRITICAL")
    assert "memory" in updates[0]["snapshot"]


def test_watch_once_exit_code_follows_the_verdict() -> None:
    out = resguard("watch", "--once", "--json")
    level = json.loads(out.stdout)["level"]
    assert out.returncode == (0 if level == "OK" else 1)


def test_watch_live_view_on_a_terminal() -> None:
    """On a terminal the view refreshes in place (clear screen, then a whole frame)."""
    import pty

    main, secondary = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "resguard", "watch", "--count", "2",
                                "--interval", "0.1"], stdout=secondary, stderr=subprocess.PIPE)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(main)
    screen = b"".join(chunks).decode()
    assert process.returncode == 0
    assert screen.count("\x1b[H\x1b[2J") == 2
    assert "verdict:" in screen
    assert "PID" in screen  # the process table
