"""The guardian's ``notify``: a real ``notify-send`` / ``osascript`` stand-in on PATH (an
executable that records its argv), hostile text that never escapes its argument or its
AppleScript string, a notifier that hangs or fails, and the log line where there is none."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard.guardian._actions import ActionSpec
from resguard.guardian._effects import MachineEffects
from resguard.guardian._notify import Notifier, applescript_string
from resguard.guardian._unload import ModelUnloader
from resguard.rules import Breach, Level
from resguard.testing import make_snapshot

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the fakes are POSIX scripts")

HOSTILE = 'say "hi" \\" & $(touch pwned) `id`; end tell\n-- "\\\\'


def _fake(tmp_path: Path, name: str, body: str = "") -> Path:
    """An executable *name* in *tmp_path* that records its argv as JSON in argv.json."""
    record = tmp_path / "argv.json"
    script = tmp_path / name
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n" + body
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return record


def _notifier(tmp_path: Path, platform: str = "linux", timeout_s: float = 5.0) -> Notifier:
    def which(name: str) -> str | None:
        path = tmp_path / name
        return str(path) if os.access(path, os.X_OK) else None

    return Notifier(which=which, platform=platform, timeout_s=timeout_s)


def _breach(rule: str = "runaway") -> Breach:
    return Breach(
        rule=rule,
        metric="cpu.percent",
        op=">",
        value=97.0,
        threshold=80.0,
        level=Level.WARNING,
        since=0.0,
        since_wall=0.0,
        held_s=60.0,
        unit="percent",
    )


def test_notify_send_gets_the_text_as_arguments_not_through_a_shell(tmp_path: Path) -> None:
    record = _fake(tmp_path, "notify-send")
    assert _notifier(tmp_path).notify("resguard: " + HOSTILE, "-n " + HOSTILE) is None
    argv = json.loads(record.read_text())
    flat = HOSTILE.replace("\n", " ")
    assert argv == ["--app-name=resguard", "--", "resguard: " + flat, "-n " + flat]
    assert not (tmp_path / "pwned").exists()
    assert not Path("pwned").exists()


def _applescript_literal(source: str, start: int) -> tuple[str, int]:
    """Read the AppleScript string literal at *source[start]*: its text and where it ends."""
    assert source[start] == '"'
    out, index = [], start + 1
    while source[index] != '"':
        if source[index] == "\\":
            index += 1
            assert source[index] in '"\\'
        out.append(source[index])
        index += 1
    return "".join(out), index + 1


def test_osascript_gets_one_script_whose_strings_hold_the_hostile_text(tmp_path: Path) -> None:
    record = _fake(tmp_path, "osascript")
    notifier = _notifier(tmp_path, platform="darwin")
    assert notifier.notify("title " + HOSTILE, HOSTILE) is None
    flag, script = json.loads(record.read_text())
    assert flag == "-e"
    prefix = "display notification "
    assert script.startswith(prefix)
    body, end = _applescript_literal(script, len(prefix))
    assert script[end:].startswith(" with title ")
    title, end = _applescript_literal(script, end + len(" with title "))
    assert end == len(script)  # nothing after the title: no text became script
    assert (body, title) == (HOSTILE.replace("\n", " "), "title " + HOSTILE.replace("\n", " "))


@given(st.text())
def test_any_text_is_one_applescript_string_that_reads_back_as_itself(text: str) -> None:
    literal = applescript_string(text)
    read, end = _applescript_literal(literal, 0)
    assert end == len(literal)
    assert read == "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text)


def test_a_hanging_notifier_is_killed_at_its_deadline(tmp_path: Path) -> None:
    _fake(tmp_path, "notify-send", "import signal\nsignal.pause()\n")  # hangs
    started = time.monotonic()
    result = _notifier(tmp_path, timeout_s=0.5).notify("t", "b")
    assert time.monotonic() - started < 10
    assert result is not None
    assert "did not finish within 0.5 s" in result


def test_a_failing_notifier_is_a_failed_result_and_the_alert_is_logged_instead(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _fake(tmp_path, "notify-send", "sys.stderr.write('no dbus session'); sys.exit(3)\n")
    with caplog.at_level(logging.WARNING, logger="resguard"):
        result = _notifier(tmp_path).notify("resguard: WARNING hot", "cpu 97 C")
    assert result == str(tmp_path / "notify-send") + " exited with 3: no dbus session"
    assert "WARNING hot: cpu 97 C (failed: " in caplog.text
    assert "resguard: WARNING" not in caplog.text  # the log line has its own prefix


def test_without_a_notifier_the_notification_is_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="resguard"):
        assert _notifier(tmp_path).notify("resguard: WARNING runaway", "pid 42 at 99%") is None
    assert "WARNING runaway: pid 42 at 99%" in caplog.text
    assert "resguard: WARNING" not in caplog.text  # not "resguard: resguard: ..."


def test_the_notify_action_shows_the_breach_and_a_dry_run_shows_nothing(tmp_path: Path) -> None:
    record = _fake(tmp_path, "notify-send")
    effects = MachineEffects(notifier=_notifier(tmp_path), unloader=ModelUnloader("127.0.0.1:9"))
    spec = ActionSpec(index=2, when="runaway", do="notify")
    breach = _breach()
    [dry] = effects.act(spec, breach, make_snapshot(), dry_run=True)
    assert (dry.result, dry.dry_run) == ("would", True)
    assert not record.exists()
    [real] = effects.act(spec, breach, make_snapshot(), dry_run=False)
    assert real.result == "done"
    assert real.freed_bytes is None
    body = breach.message.removeprefix("runaway: ")  # the title names the rule, once
    assert breach.message.startswith("runaway: ")
    assert json.loads(record.read_text())[-2:] == ["resguard: WARNING runaway", body]


def test_a_notification_only_logged_says_so_in_its_result(tmp_path: Path) -> None:
    effects = MachineEffects(notifier=_notifier(tmp_path), unloader=ModelUnloader("127.0.0.1:9"))
    spec = ActionSpec(index=0, when="runaway", do="notify")
    [logged] = effects.act(spec, _breach(), make_snapshot(), dry_run=False)
    assert logged.result == "done: logged: no notify-send or osascript"
