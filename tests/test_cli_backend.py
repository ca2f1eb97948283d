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
    out = resguard_cli(
        "--backend", "linux", "snapshot", "--window", "0.1", env={"RESGUARD_BACKEND": "linx"}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "backend  linux"


def test_the_backend_option_refuses_a_name_it_does_not_know() -> None:
    out = resguard_cli("--backend", "bsd", "snapshot")
    assert out.returncode == 2
    assert len(out.stderr.splitlines()) == 1
    assert "'bsd' names no sensing backend; expected linux or psutil" in out.stderr


@pytest.mark.parametrize("typed", ["PSUTIL", " psutil ", "Psutil\n"])
def test_the_backend_option_takes_any_case_as_the_environment_variable_does(typed: str) -> None:
    """RESGUARD_BACKEND=PSUTIL was accepted but --backend PSUTIL refused: both are typed in
    a shell, so both take any case and surrounding whitespace."""
    for args, env in (
        (("--backend", typed, "snapshot", "--window", "0.1"), {}),
        (("snapshot", "--window", "0.1"), {backend.ENV_VAR: typed}),
    ):
        out = resguard_cli(*args, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[-1] == "backend  psutil"


def test_a_huge_backend_value_is_quoted_cut_short_in_one_line() -> None:
    """A 100 KB RESGUARD_BACKEND gave a 100 KB error line."""
    huge = "x" * 100_000
    for args, env in (
        (("--backend", huge, "snapshot"), {}),
        (("snapshot",), {backend.ENV_VAR: huge}),
    ):
        out = resguard_cli(*args, env=env)
        assert out.returncode == 2
        assert len(out.stderr.splitlines()) == 1
        assert len(out.stderr) < 400, out.stderr[:400]
        assert "(100000 characters)" in out.stderr


def test_a_refused_backend_option_changes_neither_the_default_nor_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(backend.ENV_VAR, "linux")
    monkeypatch.setattr(backend, "_chosen", "linux")
    assert main(["--backend", "bsd", "snapshot"], io.StringIO()) == 2
    assert (backend.default_backend(), os.environ[backend.ENV_VAR]) == ("linux", "linux")


_SHORT = ["--window", "0.1"]  # these tests are about which backend measures, not the CPU window
_MEASURING = [
    ["snapshot", *_SHORT],
    ["snapshot", "--json", *_SHORT],
    ["top", "-n", "1", *_SHORT],
    ["top", "-n", "1", "--json", *_SHORT],
    ["watch", "--once", *_SHORT],
    ["watch", "--once", "--json", *_SHORT],
]


@pytest.mark.parametrize("args", _MEASURING)
def test_every_measuring_command_runs_in_process_after_resguard_snapshot_was_called(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """After ``resguard.snapshot()`` the package attribute is the function, and
    ``import resguard.snapshot as sensing`` bound it: 'resguard snapshot' failed with
    "internal error: AttributeError: 'function' object has no attribute 'snapshot'"."""
    import importlib

    import resguard

    function = importlib.import_module("resguard.snapshot").snapshot
    monkeypatch.setattr(resguard, "snapshot", function)  # what resguard.snapshot() leaves
    resguard.snapshot()
    out = io.StringIO()
    assert main(args, out) in (0, 1)  # 1: watch's verdict is not OK on a busy machine
    assert capsys.readouterr().err == ""
    assert out.getvalue()


def test_the_cli_in_a_fresh_interpreter_after_resguard_snapshot_was_called() -> None:
    code = (
        "import io, resguard; resguard.snapshot(); from resguard.cli import main; "
        "print(main(['snapshot', '--json'], io.StringIO()), main(['snapshot'], io.StringIO()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (out.stdout, out.stderr) == ("0 0\n", "")


@pytest.mark.parametrize("args", [["snapshot"], ["top", "-n", "1"], ["watch", "--once"]])
def test_a_missing_psutil_on_the_psutil_backend_is_one_line_saying_how_to_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """It was "internal error ... please report it"."""
    import importlib

    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    for name in [name for name in sys.modules if name.endswith("._portable")]:
        monkeypatch.delitem(sys.modules, name)
    for module, defaults in (
        ("resguard.snapshot", "_default_samplers"),
        ("resguard.processes", "_default_tables"),
    ):
        monkeypatch.setattr(importlib.import_module(module), defaults, {})  # made before: none
    monkeypatch.setenv(backend.ENV_VAR, "linux")
    monkeypatch.setattr(backend, "_chosen", "linux")
    assert main(["--backend", "psutil", *args], io.StringIO()) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "internal error" not in err
    assert f"resguard {args[0]}: psutil cannot be imported" in err
    assert "pip install psutil" in err


def test_the_library_names_psutil_when_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from resguard.snapshot import Sampler

    monkeypatch.setitem(sys.modules, "psutil", None)
    with pytest.raises(
        ImportError, match=r"psutil sensing backend needs psutil.*pip install"
    ) as info:
        Sampler(backend="psutil")
    assert info.value.name == "psutil"


def test_snapshot_measured_by_the_psutil_backend_says_so_and_has_real_numbers() -> None:
    import psutil

    text = resguard_cli("--backend", "psutil", "snapshot", "--window", "0.1")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[-1] == "backend  psutil"
    as_json = resguard_cli("--backend", "psutil", "snapshot", "--json", "--window", "0.1")
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
    assert main(["--backend", "linux", "snapshot", "--window", "0.1"], first) == 0
    assert first.getvalue().splitlines()[-1] == "backend  linux"
    second = io.StringIO()
    assert main(["--backend", "psutil", "snapshot", "--window", "0.1"], second) == 0
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
