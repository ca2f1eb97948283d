"""The journals' JSON-lines appender: a file that cannot be written is told once, its
recovery once, and the writer never gets an exception."""

from __future__ import annotations

import json
from pathlib import Path

from resguard._modules.jsonl import JsonlAppender, stamped


def test_a_failing_file_is_told_once_and_its_recovery_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    told: list[str] = []
    appender = JsonlAppender(
        str(path),
        on_fail=lambda where, error: told.append(f"fail {where} {type(error).__name__}"),
        on_recover=lambda where: told.append(f"recover {where}"),
    )
    assert appender.append({"n": 1})
    path.unlink()
    path.mkdir()  # a directory cannot be appended to
    assert not appender.append({"n": 2})
    assert not appender.append({"n": 3})
    assert told == [f"fail {path} IsADirectoryError"]
    path.rmdir()
    assert appender.append({"n": 4})
    assert appender.append({"n": 5})
    assert told == [f"fail {path} IsADirectoryError", f"recover {path}"]
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"n": 4}, {"n": 5}]


def test_a_stamp_is_utc_to_the_millisecond() -> None:
    assert stamped(1.2345) == {"time": "1970-01-01T00:00:01.234Z", "epoch": 1.234}
