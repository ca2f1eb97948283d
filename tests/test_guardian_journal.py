"""The guardian's journal (resguard.guardian.Journal): one JSON line per outcome with the
documented fields, a log line each, and a file that cannot be written never stops it."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from resguard.guardian import Journal, Outcome, Target

EPOCH = 1_780_000_000.25  # 2026-05-28T20:26:40.250Z


def test_a_line_holds_time_rule_action_target_dry_run_result_and_freed_bytes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, wall_clock=lambda: EPOCH)
    journal.write(
        "runaway",
        Outcome("pause", Target(pid=4242, name="python3", start_time=123.45), True, "would"),
    )
    journal.write(
        "memory",
        Outcome("ollama-unload-idle", Target(model="llama3"), False, "done", freed_bytes=5),
    )
    journal.write("memory", Outcome("notify", None, False, "done"))
    first, second, third = (json.loads(line) for line in path.read_text().splitlines())
    assert first == {
        "time": "2026-05-28T20:26:40.250Z",
        "epoch": EPOCH,
        "rule": "runaway",
        "action": "pause",
        "target": {"pid": 4242, "name": "python3", "start_time": 123.45},
        "dry_run": True,
        "result": "would",
        "freed_bytes": None,
    }
    assert second["target"] == {"model": "llama3"}
    assert second["freed_bytes"] == 5
    assert third["target"] is None
    assert journal.lines_written == 3


def test_every_outcome_is_logged_on_the_guardian_logger(caplog: pytest.LogCaptureFixture) -> None:
    journal = Journal(None, wall_clock=lambda: EPOCH)
    with caplog.at_level(logging.INFO, logger="resguard.guardian"):
        journal.write("runaway", Outcome("stop", Target(pid=7, name="chrome"), True, "would"))
        journal.write("memory", Outcome("stop", Target(pid=8, name="x"), False, "failed", "gone"))
    messages = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert messages == [
        ("resguard.guardian", "INFO", "dry-run: stop 7 chrome: would (rule runaway)"),
        ("resguard.guardian", "WARNING", "stop 8 x: failed: gone (rule memory)"),
    ]


def test_a_journal_that_cannot_be_written_warns_once_and_the_guardian_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    journal = Journal(blocked / "journal.jsonl", wall_clock=lambda: EPOCH)
    outcome = Outcome("notify", None, False, "done")
    with caplog.at_level(logging.INFO, logger="resguard.guardian"):
        for _ in range(5):
            line = journal.write("rule", outcome)  # no exception: the line is still returned
            assert line["action"] == "notify"
    warnings = [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1
    assert journal.lines_written == 0
    os.remove(blocked)
    blocked.mkdir()
    with caplog.at_level(logging.INFO, logger="resguard.guardian"):
        journal.write("rule", outcome)
    assert journal.lines_written == 1
    assert any("can be written again" in r.getMessage() for r in caplog.records)


def test_a_journal_path_with_a_tilde_goes_under_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    journal = Journal("~/guardian.jsonl", wall_clock=lambda: EPOCH)
    journal.write("rule", Outcome("notify", None, False, "done"))
    assert json.loads((tmp_path / "guardian.jsonl").read_text())["action"] == "notify"


def test_a_process_name_cannot_forge_a_log_line_nor_drive_the_terminal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = "evil\nresguard: stop 1 init: done\x1b[2J"
    outcome = Outcome("pause", Target(pid=7, name=name), False, "done")
    with caplog.at_level(logging.INFO, logger="resguard"):
        Journal(None).write("rule\rx", outcome)
    [record] = caplog.records
    text = record.getMessage()
    assert not {"\n", "\r", "\x1b"} & set(text)
    assert "evil\\nresguard: stop 1 init: done\\x1b[2J" in text
    assert record.name == "resguard.guardian"


@pytest.mark.parametrize(
    ("status", "level"),
    [
        ("done", logging.INFO),
        ("would", logging.INFO),
        ("skipped", logging.INFO),
        ("refused", logging.WARNING),
        ("failed", logging.WARNING),
    ],
)
def test_what_went_wrong_is_logged_as_a_warning_by_its_status(
    caplog: pytest.LogCaptureFixture, status: str, level: int
) -> None:
    with caplog.at_level(logging.INFO, logger="resguard"):
        Journal(None).write("rule", Outcome("stop", None, False, status, "why"))  # type: ignore[arg-type]
    assert [record.levelno for record in caplog.records] == [level]


def test_an_outcome_is_one_of_the_documented_statuses_and_its_result_joins_the_reason() -> None:
    assert Outcome("stop", None, False, "refused", "no match").result == "refused: no match"
    assert Outcome("stop", None, False, "done").result == "done"
    with pytest.raises(ValueError, match="expected one of done, would, skipped, refused, failed"):
        Outcome("stop", None, False, "skipped: no match")  # type: ignore[arg-type]
