"""``resguard run`` against a hostile start: stderr closed, an exec that fails, a storm of
stop signals, a signal to the whole process group, resguard itself SIGKILLed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support import sigint_counter, wait_until

pytestmark = pytest.mark.linux_backend

RESGUARD = [sys.executable, "-m", "resguard", "run"]


def _lines(journal: Path, event: str | None = None) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    return [line for line in lines if event is None or line["event"] == event]


def _start(journal: Path, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [*RESGUARD, "--journal", str(journal), *args],
        stdin=subprocess.DEVNULL,
        text=True,
        **kwargs,
    )


def test_with_stderr_closed_the_command_runs_and_the_journal_file_gets_the_events(
    tmp_path: Path,
) -> None:
    journal, marker = tmp_path / "journal.jsonl", tmp_path / "ran"
    command = [*RESGUARD, "--journal", str(journal), "--", "touch", str(marker)]
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" 2>&-', "sh", *command], stdin=subprocess.DEVNULL, timeout=60
    )
    assert done.returncode == 0
    assert marker.exists()
    assert [line["event"] for line in _lines(journal)] == ["budget", "start", "exit", "end"]


@pytest.mark.parametrize(
    ("content", "code", "why"),
    [
        (b"#!/nonexistent/interp\n", 127, "No such file or directory"),
        (b"\x7fELF" + b"junk" * 8, 126, "Exec format error"),
    ],
)
def test_an_exec_that_fails_is_a_start_that_failed_with_the_shell_s_code_not_restarted(
    tmp_path: Path, content: bytes, code: int, why: str
) -> None:
    program, journal = tmp_path / "prog", tmp_path / "journal.jsonl"
    program.write_bytes(content)
    program.chmod(0o755)
    process = _start(journal, "--backoff", "0.05s", "--", str(program))
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert _lines(journal, "start") == []
    (ended,) = _lines(journal, "exit")
    assert (ended["status"], ended["code"], ended["restart"]) == ("not-started", code, False)
    assert why in ended["reason"]
    (end,) = _lines(journal, "end")
    assert (end["code"], end["runs"]) == (code, 0)


DEAF = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").close()
time.sleep(120)
"""


def test_a_storm_of_stop_signals_is_one_sigkill_and_resguard_writes_its_end_line(
    tmp_path: Path,
) -> None:
    journal, marker = tmp_path / "journal.jsonl", tmp_path / "ready"
    process = _start(
        journal, "--stop-timeout", "30s", "--", sys.executable, "-c", DEAF, str(marker)
    )
    wait_until(marker.exists, timeout_s=20, what="the child to start")
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:  # until resguard ends
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 137, err
    kills = [line for line in _lines(journal, "signal") if line["action"] == "kill"]
    assert len(kills) == 1
    (end,) = _lines(journal, "end")
    assert end["code"] == 137


COUNTER = sigint_counter(ready="os.getpgrp()", exit_code=0)


def test_outside_a_terminal_a_sigint_to_the_process_group_reaches_the_child_once(
    tmp_path: Path,
) -> None:
    journal, out = tmp_path / "journal.jsonl", tmp_path / "got"
    process = _start(journal, "--", sys.executable, "-c", COUNTER, str(out), start_new_session=True)
    ready = Path(f"{out}.ready")
    wait_until(lambda: ready.exists() and ready.read_text(), timeout_s=20, what="the child")
    assert int(ready.read_text()) != process.pid  # not in resguard's group (its own)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.read_text() == "INT\n"


SLEEPER = """
import os, sys, time
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
time.sleep(120)
"""


def test_a_sigkill_of_resguard_does_not_leave_the_command_running_unsupervised(
    tmp_path: Path,
) -> None:
    journal, marker = tmp_path / "journal.jsonl", tmp_path / "pid"
    process = _start(journal, "--", sys.executable, "-c", SLEEPER, str(marker))
    wait_until(lambda: marker.exists() and marker.read_text(), timeout_s=20, what="the child")
    child = int(marker.read_text())
    process.kill()
    process.communicate(timeout=60)

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{child}/stat").read_text().split(") ")[-1].startswith("Z")

    wait_until(gone, timeout_s=10, what="the command to die with resguard")
