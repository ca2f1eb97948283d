"""``resguard run``'s command line: bad input is one line quoting it, a missing command
exits 127 as a shell would, ``--dry-run`` says what it would do and changes nothing."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from resguard.cli import main
from resguard.supervise import (
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_BACKOFF_S,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_STABLE_S,
    DEFAULT_STOP_TIMEOUT_S,
    Plan,
    RunConfig,
)
from resguard.units import format_duration


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    out = io.StringIO()
    code = main(["run", *argv], out=out)
    return code, out.getvalue(), capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "quoted"),
    [
        (["--memory", "lots", "--", "true"], "'lots' is not a size"),
        (["--memory", "64", "--", "true"], "'64' is too small for a memory budget"),
        (["--restart", "sometimes", "--", "true"], "invalid choice: 'sometimes'"),
        (["--max-restarts", "-1", "--", "true"], "'-1' is negative"),
        (["--backoff", "soon", "--", "true"], "'soon' is not a duration"),
        (["--stable", "0", "--", "true"], "--stable: stable_s=0.0 is out of range; expected a"),
        (["--memory", "64MiB"], "no command given; expected: resguard run [options] -- CMD"),
        (["--memory", "64MiB", "--cgroup-parent", "/tmp", "--", "true"], "'/tmp' is not a cgroup"),
    ],
)
def test_bad_input_is_one_line_quoting_the_value_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], quoted: str
) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert quoted in err
    assert err.startswith("resguard run")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_a_command_that_is_not_found_exits_127_as_a_shell_would(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = _run(capsys, "--", "no-such-command-resguard")
    assert (code, err) == (
        127,
        "resguard run: cannot run 'no-such-command-resguard': not found on PATH\n",
    )
    text = tmp_path / "notes.txt"
    text.write_text("")
    code, _, err = _run(capsys, "--", str(text))
    assert code == 126
    assert "not an executable file" in err


def test_options_after_the_double_dash_belong_to_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(capsys, "--dry-run", "--restart", "never", "--", "ls", "--restart", "-l")
    assert code == 0
    assert out.splitlines()[0] == "dry-run: would run ls --restart -l"
    assert "never restarted" in out


def test_dry_run_says_the_budget_and_the_restart_waits_and_makes_no_cgroup(
    capsys: pytest.CaptureFixture[str],
) -> None:
    own = _own_memory_cgroup()
    before = set(os.listdir(own)) if own else set()
    code, out, _ = _run(
        capsys,
        "--dry-run",
        "--memory",
        "64MiB",
        "--max-restarts",
        "3",
        "--backoff",
        "0.5s",
        "--journal",
        "/tmp/j.jsonl",
        "--",
        sys.executable,
        "-c",
        "pass",
    )
    assert code == 0
    assert "budget: 64.0 MiB as " in out
    assert "at most 3 time(s) in a row (waits 500ms, 1s, 2s)" in out
    assert "journal: stderr and /tmp/j.jsonl" in out
    if own:
        assert set(os.listdir(own)) == before


def _own_memory_cgroup() -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return f"/sys/fs/cgroup/memory{path}"
    return None


def test_run_is_listed_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "\n    run  " in capsys.readouterr().out


def test_the_flags_defaults_are_the_supervisor_s_own(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--dry-run", "--", "true")
    assert code == 0
    first, cap = format_duration(DEFAULT_BACKOFF_S), format_duration(DEFAULT_BACKOFF_MAX_S)
    assert f"at most {DEFAULT_MAX_RESTARTS} time(s) in a row (waits {first}, " in out
    assert f"a run of {format_duration(DEFAULT_STABLE_S)} or more resets" in out
    assert RunConfig(("true",)).plan() == Plan()
    assert main(["run", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    for default in (first, cap, format_duration(DEFAULT_STOP_TIMEOUT_S)):
        assert f"({default})" in shown
    assert f"default {DEFAULT_MAX_RESTARTS};" in shown


def test_a_dry_run_of_a_huge_restart_count_shows_a_bounded_schedule(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(capsys, "--dry-run", "--max-restarts", "99999999999999999999", "--", "x")
    assert code == 0
    assert (
        "at most 99999999999999999999 time(s) in a row (waits 1s, 2s, 4s, 8s, 16s, 30s, …)" in out
    )


def test_a_backoff_cap_below_the_first_wait_is_refused_and_a_long_first_wait_raises_the_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = _run(capsys, "--backoff", "5s", "--backoff-max", "1s", "--", "true")
    assert code == 2
    assert "--backoff-max: backoff_max_s=1.0 is below backoff_s=5.0" in err
    code, out, _ = _run(capsys, "--dry-run", "--backoff", "60s", "--", "true")
    assert (code, "(waits 1m00s, 1m00s, 1m00s" in out) == (0, True)


def test_the_command_is_shown_quoted_as_a_shell_would_take_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(capsys, "--dry-run", "--", "echo", "a b", "it's")
    assert code == 0
    assert out.splitlines()[0] == "dry-run: would run echo 'a b' 'it'\"'\"'s'"


def test_the_help_has_an_example_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "example: resguard run --memory 512MiB" in shown
    assert "127 when it is not found, 126 when it cannot be run" in shown


def test_an_in_process_run_gives_the_callers_signal_handlers_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only resguard's own process ignores stop signals after its command ends (so a storm
    cannot replace the command's code with 143); a caller's process keeps its handlers, or
    every child it starts later would inherit SIG_IGN for SIGTERM and SIGINT (CI's guardian
    tests then waited for children that ignored their SIGTERM)."""
    import signal

    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    code, _, _ = _run(capsys, "--restart", "never", "--", sys.executable, "-c", "pass")
    assert code == 0
    assert {number: signal.getsignal(number) for number in before} == before
