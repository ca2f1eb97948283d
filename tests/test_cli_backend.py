"""The command line and the sensing backend: ``--backend linux|psutil`` picks it, a
``RESGUARD_BACKEND`` that names no backend makes every command exit 2 in one line, and
``resguard snapshot`` says which backend measured (and macOS's memory-pressure level).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import attrs
import pytest

from resguard._probes import backend
from resguard.cli import format_snapshot, main
from resguard.testing import make_snapshot


def resguard_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resguard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "args",
    [
        ["snapshot"],
        ["snapshot", "--json"],
        ["top", "-n", "1"],
        ["watch", "--once"],
        ["docker", "stats"],
        ["ollama", "ps"],
        ["budget"],
    ],
)
def test_a_bad_resguard_backend_makes_every_command_exit_2_in_one_line(args: list[str]) -> None:
    out = resguard_cli(*args, env={"RESGUARD_BACKEND": "linx"})
    assert out.returncode == 2, out
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert "RESGUARD_BACKEND='linx' names no sensing backend" in lines[0]
    assert "expected one of linux, psutil" in lines[0]


def test_help_and_version_still_work_with_a_bad_resguard_backend() -> None:
    for args in (["--help"], ["--version"], ["snapshot", "--help"]):
        out = resguard_cli(*args, env={"RESGUARD_BACKEND": "linx"})
        assert out.returncode == 0, out


def test_the_backend_option_overrides_the_environment() -> None:
    out = resguard_cli("--backend", "linux", "snapshot", env={"RESGUARD_BACKEND": "linx"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "backend  linux"


def test_the_backend_option_refuses_a_name_it_does_not_know() -> None:
    out = resguard_cli("--backend", "bsd", "snapshot")
    assert out.returncode == 2
    assert len(out.stderr.splitlines()) == 1
    assert "invalid choice: 'bsd'" in out.stderr


def test_snapshot_measured_by_the_psutil_backend_says_so_and_has_real_numbers() -> None:
    import psutil

    text = resguard_cli("--backend", "psutil", "snapshot")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[-1] == "backend  psutil"
    as_json = resguard_cli("--backend", "psutil", "snapshot", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["memory"]["total"] == psutil.virtual_memory().total
    assert data["memory"]["available"] > 0


def test_the_backend_option_switches_a_process_that_measured_with_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """main() called twice in one process (as a script or a test does): the second
    --backend is the one that measures, and its children inherit it."""
    monkeypatch.setenv(backend.ENV_VAR, "linux")  # undone afterwards, whatever main() sets
    monkeypatch.setattr(backend, "_chosen", "linux")
    first = io.StringIO()
    assert main(["--backend", "linux", "snapshot"], first) == 0
    assert first.getvalue().splitlines()[-1] == "backend  linux"
    second = io.StringIO()
    assert main(["--backend", "psutil", "snapshot"], second) == 0
    assert second.getvalue().splitlines()[-1] == "backend  psutil"
    assert backend.default_backend() == "psutil"
    assert os.environ[backend.ENV_VAR] == "psutil"


@pytest.mark.parametrize(
    ("level", "shown"),
    [(1, "normal (1)"), (2, "warning (2)"), (4, "critical (4)"), (3, "level (3)")],
)
def test_snapshot_text_shows_the_macos_memory_pressure_level(level: int, shown: str) -> None:
    snap = make_snapshot()
    mac = attrs.evolve(snap, pressure=attrs.evolve(snap.pressure, memory_level=level))
    pressure = next(line for line in format_snapshot(mac).splitlines() if "pressure" in line)
    assert pressure.endswith(f"; macOS memory pressure {shown}")
    assert "macOS" not in format_snapshot(snap)  # no level elsewhere: nothing said
