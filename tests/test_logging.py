"""resguard's log is visible while nobody configured logging and routed once anyone did,
never twice; its records carry structured fields; refusals are summarised (issue 16,
item 1).

Each routing case runs in a fresh interpreter (logging's configuration is process-wide);
the rest runs here, where pytest's caplog is the configured handler.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resguard import InvalidValue
from resguard._modules.log import (
    FIELD_NAMES,
    PREFIX,
    RefusalLog,
    fields,
    flush_refusals,
    get_logger,
    verdict_fields,
)
from resguard.rules import Level, Policy, Threshold
from resguard.testing import ManualClock, make_process, make_snapshot

ROOT = Path(__file__).parent.parent

RESGUARD_LINE = "import resguard.monitor, logging; log = logging.getLogger('resguard.monitor')\n"


def stderr_of(code: str) -> str:
    """What *code* (after importing a resguard module that logs) wrote on stderr."""
    done = subprocess.run(
        [sys.executable, "-c", RESGUARD_LINE + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stderr


def test_unconfigured_logging_shows_info_and_up_on_stderr() -> None:
    err = stderr_of("log.debug('quiet'); log.info('level OK -> WARNING'); log.warning('w')")
    assert err.splitlines() == ["resguard: INFO level OK -> WARNING", "resguard: WARNING w"]


@pytest.mark.parametrize(
    "configure",
    [
        "logging.basicConfig(format='%(name)s %(levelname)s %(message)s', level=logging.INFO)",
        "import logging.config; logging.config.dictConfig({'version': 1, "
        "'disable_existing_loggers': False, 'formatters': {'f': {'format': "
        "'%(name)s %(levelname)s %(message)s'}}, 'handlers': {'h': {'class': "
        "'logging.StreamHandler', 'formatter': 'f'}}, 'root': {'handlers': ['h'], "
        "'level': 'INFO'}})",
        "h = logging.StreamHandler(); h.setFormatter(logging.Formatter("
        "'%(name)s %(levelname)s %(message)s')); logging.getLogger('resguard').addHandler(h)",
    ],
    ids=["basicConfig", "dictConfig", "a handler on resguard"],
)
def test_configured_logging_gets_each_record_once(configure: str) -> None:
    err = stderr_of(configure + "\nlog.info('level OK -> WARNING')")
    assert err.splitlines() == ["resguard.monitor INFO level OK -> WARNING"]


def test_a_level_set_before_import_is_kept_and_warning_silences_info() -> None:
    code = (
        "import logging; logging.getLogger('resguard').setLevel(logging.WARNING)\n"
        "import resguard.monitor\n"
        "log = logging.getLogger('resguard.monitor'); log.info('i'); log.warning('w')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr.splitlines() == ["resguard: WARNING w"]
    assert stderr_of("logging.getLogger('resguard').setLevel(logging.WARNING); log.info('i')") == (
        ""
    )


def test_the_default_handler_level_keeps_a_commands_stderr_for_warnings() -> None:
    err = stderr_of(
        "from resguard._modules.log import set_default_level\n"
        "set_default_level(logging.WARNING); log.info('i'); log.warning('w')"
    )
    assert err.splitlines() == ["resguard: WARNING w"]


def test_watch_still_holds_lines_off_its_screen_and_says_them_after() -> None:
    err = stderr_of(
        "from resguard.cli import _screen\n"
        "held = _screen._hold_logs(); log.info('i'); log.warning('w')\n"
        "import sys; sys.stderr.write('--released--\\n'); _screen._release_logs(held)"
    )
    assert err.splitlines() == ["--released--", "resguard watch: warning: w"]


def test_caplog_sees_one_record_and_nothing_reaches_stderr(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="resguard")
    get_logger("resguard.monitor").info("level OK -> WARNING", extra=fields("level_change"))
    assert [r.getMessage() for r in caplog.records] == ["level OK -> WARNING"]
    assert capsys.readouterr().err == ""


class JsonFormatter(logging.Formatter):
    """What a user's JSON formatter does: the message and every resguard_ field."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"level": record.levelname, "message": record.getMessage()}
        data.update({k: v for k, v in vars(record).items() if k.startswith(PREFIX)})
        return json.dumps(data)


def formatted(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(JsonFormatter().format(record)) for record in caplog.records]


def test_a_json_formatter_finds_the_refusal_summary_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="resguard")
    clock = ManualClock(100.0)
    refusals = RefusalLog("guard 'api'", interval_s=10, clock=clock)
    for _ in range(3):
        refusals.note("memory")
    refusals.note("timeout")
    clock.advance(10)
    refusals.note("memory")
    first, summary = formatted(caplog)
    assert first["resguard_event"] == "refusals"
    assert first["resguard_refused_by_reason"] == {"memory": 1}
    assert summary == {
        "level": "WARNING",
        "message": "guard 'api' refused 4 requests in the last 10s: memory=3, timeout=1",
        "resguard_event": "refusals",
        "resguard_guard": "guard 'api'",
        "resguard_refused": 4,
        "resguard_refused_by_reason": {"memory": 3, "timeout": 1},
        "resguard_interval_s": 10.0,
    }


def test_verdict_fields_name_the_level_rules_and_culprits() -> None:
    policy = Policy([Threshold("memory.percent", ">", 50, level=Level.WARNING, name="high")])
    snap = make_snapshot(memory_percent=80, processes=(make_process(pid=1234, name="python"),))
    extra = verdict_fields(policy.evaluate(snap))
    assert extra["resguard_level"] == "WARNING"
    assert extra["resguard_rule"] == "high"
    assert extra["resguard_rules"] == ["high"]
    assert isinstance(extra["resguard_culprits"], list)
    json.dumps({**fields("level_change", previous_level="OK"), **extra})


def test_fields_are_one_vocabulary_with_one_prefix() -> None:
    extra = fields("reclaim_step", step="cache", freed_bytes=1024)
    assert extra == {
        "resguard_event": "reclaim_step",
        "resguard_step": "cache",
        "resguard_freed_bytes": 1024,
    }
    assert {"level", "rule", "culprits", "freed_bytes"} <= FIELD_NAMES
    with pytest.raises(InvalidValue, match="freed_byte"):
        fields("reclaim_step", freed_byte=1)
    logging.makeLogRecord(fields("x", **dict.fromkeys(FIELD_NAMES - {"event"})))  # no clash


def test_a_burst_of_refusals_is_one_line_then_one_summary_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="resguard")
    clock = ManualClock(0.0)
    refusals = RefusalLog("g", interval_s=10, clock=clock)
    for step in range(3000):  # 30 s of 100 refusals a second
        refusals.note("memory")
        if step % 100 == 99:
            clock.advance(1)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3, lines  # the first at once (0 s), then a summary at 10 s, 20 s
    assert lines[0].startswith("g refused 1 request: memory;")
    assert all("refused 1000 requests" in line for line in lines[1:3])
    refusals.flush()  # the tail
    said = [record.__dict__["resguard_refused"] for record in caplog.records]
    assert sum(said) == 3000
    refusals.flush()
    assert len(caplog.records) == 4  # nothing new: nothing said


def test_refusals_counted_from_many_threads_lose_none() -> None:
    refusals = RefusalLog("g", interval_s=3600, logger=logging.getLogger("test.refusals"))
    go = threading.Barrier(8)

    def refuse() -> None:
        go.wait()
        for _ in range(20_000):
            refusals.note("memory")

    threads = [threading.Thread(target=refuse) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert refusals.counted == {"memory": 160_000}


def test_the_command_line_keeps_its_stderr_for_warnings() -> None:
    err = stderr_of(
        "import io; from resguard.cli import main\n"
        "assert main(['snapshot', '--json'], out=io.StringIO()) == 0\n"
        "log.info('an info line a library user would see'); log.warning('w')"
    )
    assert "resguard: INFO" not in err
    assert err.splitlines()[-1] == "resguard: WARNING w"


def test_flush_refusals_says_every_bursts_tail(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="resguard")
    clock = ManualClock(0.0)
    a, b = RefusalLog("a", clock=clock), RefusalLog("b", clock=clock)
    for refusals in (a, b, a, b, b):
        refusals.note("memory")
    assert len(caplog.records) == 2  # the first refusal of each burst
    flush_refusals()
    tails = [r.getMessage() for r in caplog.records[2:]]
    assert sorted(tails) == [
        "a refused 1 request in the last 0s: memory=1",
        "b refused 2 requests in the last 0s: memory=2",
    ]


def test_a_json_formatter_finds_the_level_change_and_reclaim_step_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from resguard.monitor import Monitor

    from support import Machine

    caplog.set_level(logging.DEBUG, logger="resguard")  # a step that freed nothing: DEBUG
    machine = Machine(tmp_path)
    policy = Policy([Threshold("memory.percent", ">", 50, level=Level.WARNING, name="high")])
    monitor = Monitor(policy=policy, sampler=machine.sampler, psi_trigger=False)
    machine.set_used_percent(30)
    monitor.sample_now()
    machine.set_used_percent(60)
    monitor.sample_now()
    monitor.reclaim_now()
    lines = formatted(caplog)
    [change] = [line for line in lines if line.get("resguard_event") == "level_change"]
    assert change["resguard_level"] == "WARNING"
    assert change["resguard_previous_level"] == "OK"
    assert change["resguard_rule"] == "high"
    assert change["resguard_rules"] == ["high"]
    assert change["resguard_culprits"] == []
    steps = [line for line in lines if line.get("resguard_event") == "reclaim_step"]
    assert steps
    assert steps[0]["resguard_step"] == "gc.collect"
    assert "resguard_freed_bytes" in steps[0]


class Collecting(logging.Handler):
    """Keeps the records it gets in *records*."""

    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@given(
    st.lists(
        st.tuples(st.sampled_from(["memory", "timeout", "level"]), st.floats(0, 30)),
        max_size=200,
    )
)
@settings(max_examples=60, deadline=None)
def test_refusal_lines_count_every_refusal_once_and_at_most_one_line_per_interval(
    refusals_and_waits: list[tuple[str, float]],
) -> None:
    clock = ManualClock(0.0)
    said: list[logging.LogRecord] = []
    logger = logging.getLogger("test.refusal_lines")
    logger.propagate = False
    handler = Collecting(said)
    logger.addHandler(handler)
    try:
        refusals = RefusalLog("g", interval_s=10, logger=logger, clock=clock)
        for reason, wait_s in refusals_and_waits:
            refusals.note(reason)
            clock.advance(wait_s)
        lines_before_flush = len(said)
        refusals.flush()
    finally:
        logger.removeHandler(handler)
    by_reason: dict[str, int] = {}
    for record in said:
        for reason, count in record.__dict__["resguard_refused_by_reason"].items():
            by_reason[reason] = by_reason.get(reason, 0) + count
    expected: dict[str, int] = {}
    for reason, _ in refusals_and_waits:
        expected[reason] = expected.get(reason, 0) + 1
    assert by_reason == expected
    assert lines_before_flush <= 1 + clock() // 10
    assert len(said) <= lines_before_flush + 1
