"""What a new user's walkthrough of the command line tripped over: ``watch --count 0``
ran forever, ``--once`` with ``--count`` was silently one of them, ``top``'s help hid
what ``--interval`` and ``--by`` do, an unexplained ``N`` column, ``--backend`` after the
command with no hint, errors of ``docker stats`` naming only ``resguard``, and every
``watch`` line ending in a redundant ``| OK``."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

import resguard as rg
import resguard.cli.docker as docker_command
from resguard._errors import InvalidValue
from resguard.cli import build_parser, format_line, format_processes, main

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run *argv* in-process; it must fail with exit 2 and one line on stderr."""
    code = main(list(argv), out=io.StringIO())
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1, err
    return err


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Parse *argv* only (a ``watch --count 0`` that parsed would run forever): it must be
    refused with exit 2 and one line on stderr."""
    with pytest.raises(SystemExit) as refusal:
        build_parser().parse_args(list(argv))
    err = capsys.readouterr().err
    assert refusal.value.code == 2, (refusal.value.code, err)
    assert len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------ watch --count ---


@pytest.mark.parametrize("count", ["0", "-1"])
def test_watch_count_takes_one_or_more(capsys: pytest.CaptureFixture[str], count: str) -> None:
    err = _refused(capsys, "watch", "--count", count)
    assert err.startswith("resguard watch: argument --count:"), err
    assert "1 or more" in err


@pytest.mark.parametrize(
    "argv", [["--once", "--count", "2"], ["--count", "2", "--once"]], ids=" ".join
)
def test_watch_once_and_count_conflict(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    err = _refused(capsys, "watch", *argv)
    assert err.startswith("resguard watch:"), err
    assert "not allowed with" in err


def test_watch_count_one_stops_after_one_update() -> None:
    out = io.StringIO()
    assert main(["watch", "--count", "1", "--interval", "1ms"], out=out) == 0
    assert len(out.getvalue().splitlines()) == 1


# --------------------------------------------------------------------- top's help ---


def test_top_help_says_what_a_short_window_does_and_the_default_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["top", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "measured over at least 0.25s, so a shorter window is raised to 0.25s" in text
    assert "(default cpu)" in text
    assert "PROCS" in text  # --group says what the column counts


def test_the_process_table_names_its_count_column() -> None:
    rows = rg.top_processes(2, group=True) or []
    header = format_processes(rows).splitlines()[0].split()
    assert header == ["PID", "CPU%", "RSS", "PROCS", "USER", "COMMAND"]


def test_the_docs_synopses_show_top_window_and_watch_count() -> None:
    text = DOCS.read_text(encoding="utf-8")
    (top,) = [line for line in text.splitlines() if line.startswith("| `resguard top ")]
    (watch,) = [line for line in text.splitlines() if line.startswith("| `resguard watch ")]
    assert "[--window SECONDS]" in top
    # the synopsis names every column of top's table (PROCS: what --group counts)
    assert all(f"`{column}`" in top for column in format_processes([]).split())
    assert "[--count N \\| --once]" in watch
    assert "[-n N]" in watch


# ------------------------------------------------- --backend and the command name ---


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["snapshot", "--backend", "psutil"], "resguard --backend psutil snapshot"),
        (["top", "--backend=LINUX"], "resguard --backend linux top"),
        (["docker", "stats", "--backend", "psutil"], "resguard --backend psutil docker stats"),
    ],
)
def test_backend_after_the_command_says_where_it_goes(
    capsys: pytest.CaptureFixture[str], argv: list[str], hint: str
) -> None:
    err = _error(capsys, *argv)
    assert f"--backend goes before the command: {hint}" in err, err


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (["docker", "stats", "--no-such-option"], "resguard docker stats: "),
        (["docker", "limits", "extra"], "resguard docker limits: "),
        (["ollama", "ps", "--no-such-option"], "resguard ollama ps: "),
        (["snapshot", "--no-such-option"], "resguard snapshot: "),
    ],
)
def test_an_unknown_argument_is_refused_in_the_full_command_name(
    capsys: pytest.CaptureFixture[str], argv: list[str], prefix: str
) -> None:
    assert _error(capsys, *argv).startswith(prefix)


@pytest.mark.parametrize("subcommand", ["stats", "limits"])
def test_docker_errors_start_with_the_full_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, subcommand: str
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> int:
        raise InvalidValue("a bad value")

    monkeypatch.setattr(docker_command, "cli", refuse)
    monkeypatch.setattr(docker_command, "integration", lambda module, command: object())
    err = _error(capsys, "docker", subcommand)
    assert err.startswith(f"resguard docker {subcommand}: a bad value"), err


def test_a_missing_integration_is_named_by_the_full_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "resguard.docker", None)  # import resguard.docker fails
    err = _error(capsys, "docker", "limits")
    assert err.startswith("resguard docker limits: "), err


# ------------------------------------------------------------- watch's pipe lines ---


def _state(level: Any, breaches: tuple[Any, ...] = (), unknown: tuple[str, ...] = ()) -> Any:
    from resguard.monitor import State
    from resguard.rules import Verdict

    return State(snapshot=rg.snapshot(), verdict=Verdict(level, breaches, unknown), sequence=1)


def test_an_ok_line_does_not_repeat_its_level() -> None:
    from resguard.rules import Level

    line = format_line(_state(Level.OK))
    assert line.split()[1] == "OK"
    assert "|" not in line, line
    assert line.count("OK") == 1, line


def test_a_line_shows_the_reasons_that_say_something() -> None:
    from resguard.rules import Breach, Level

    breach = Breach(
        rule="memory-high",
        metric="memory.percent",
        op=">=",
        value=91.0,
        threshold=90.0,
        level=Level.CRITICAL,
        since=0.0,
        since_wall=0.0,
        held_s=5.0,
        unit="percent",
    )
    line = format_line(_state(Level.CRITICAL, (breach,), ("psi: no PSI here",)))
    reason = line.split(" | ", 1)[1]
    assert reason == f"{breach.message} (unknown: psi: no PSI here)", line
    assert line.count("CRITICAL") == 1, line
    ok_unknown = format_line(_state(Level.OK, (), ("psi: no PSI here",)))
    assert ok_unknown.endswith(" | unknown: psi: no PSI here"), ok_unknown
