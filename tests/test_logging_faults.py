"""resguard's log lines never break resguard: a handler whose ``emit`` raises (a JSON
handler with a bug, a closed stream) is said once on standard error and everything goes on
(the monitor's threads, a refusal's 503, ``sample_now``). And the lines tell enough, not
too much: a refusal burst's tail is told by the monitor's tick, a ladder with nothing to
free says so once per episode, a jump to CRITICAL is an ERROR record."""

from __future__ import annotations

import io
import itertools
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from resguard import Guard, LazyModel, Level, Monitor, ResourceExhausted
from resguard._modules import log as log_module
from resguard._modules.log import RefusalLog, emit, flush_due_refusals
from resguard.reclaim import Ladder
from resguard.testing import ManualClock, StaticMonitor
from test_monitor import two_levels

from support import Machine, wait_until


class Raising(logging.Handler):
    """A handler with a bug: its ``emit`` itself raises (logging does not catch that)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.calls = 0

    def attach(self) -> None:
        """From now on (a fixture /proc's missing files are told by the sampler's own
        fault log, which is not the subject here, before this)."""
        logging.getLogger("resguard").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.calls += 1
        raise RuntimeError("handler bug")


@pytest.fixture
def raising() -> Iterator[Raising]:
    """A raising handler on the ``resguard`` logger, said afresh (the once-per-process
    notice is reset) and taken off after the test."""
    handler = Raising()
    logger = logging.getLogger("resguard")
    saved = log_module._handler_failures
    log_module._handler_failures = itertools.count()
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        log_module._handler_failures = saved


def test_emit_never_raises_and_says_a_broken_handler_once_on_stderr(
    raising: Raising, capsys: pytest.CaptureFixture[str]
) -> None:
    raising.attach()
    logger = logging.getLogger("resguard.test")
    assert emit(logger, logging.WARNING, "one %s", "line") is False
    assert emit(logger, logging.WARNING, "two") is False
    assert raising.calls == 2
    err = capsys.readouterr().err
    assert err.count("a logging handler raised RuntimeError: handler bug") == 1, err


def test_a_refusal_with_a_raising_handler_is_still_a_refusal(raising: Raising) -> None:
    guard = Guard(memory="90%", monitor=StaticMonitor(memory_percent=97))
    raising.attach()
    with pytest.raises(ResourceExhausted):  # not the handler's RuntimeError (a 500)
        with guard:
            pass
    assert raising.calls >= 1


def test_static_monitor_set_with_a_raising_handler_publishes_the_level(raising: Raising) -> None:
    static = StaticMonitor(memory_percent=40)
    raising.attach()
    static.set(memory_percent=97)  # raised the handler's error before
    assert static.state.level == Level.CRITICAL


def test_a_level_change_with_a_raising_handler_is_published_and_told(
    raising: Raising, tmp_path: Path
) -> None:
    machine = Machine(tmp_path)
    machine.set_used_percent(30)
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, reclaim=False)
    heard: list[Level] = []
    monitor.subscribe(lambda new, old: heard.append(new.level))
    monitor.sample_now()
    raising.attach()
    machine.set_used_percent(90)
    assert monitor.sample_now().level == Level.CRITICAL  # never raises, as documented
    assert heard == [Level.CRITICAL]
    assert raising.calls >= 1


def test_the_monitor_thread_survives_a_raising_handler(raising: Raising, tmp_path: Path) -> None:
    machine = Machine(tmp_path)
    machine.set_used_percent(30)
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, reclaim=False, interval="10ms")
    raising.attach()  # start() says how the loop waits: through it too
    with monitor:
        machine.set_used_percent(60)
        wait_until(lambda: monitor.state.level == Level.WARNING, timeout_s=10, what="WARNING")
        ticks = monitor.ticks
        wait_until(lambda: monitor.ticks > ticks + 3, timeout_s=10, what="ticks go on")
        machine.set_used_percent(30)
        wait_until(lambda: monitor.state.level == Level.OK, timeout_s=10, what="back to OK")
    assert raising.calls >= 2  # the two level changes at least


def test_the_monitor_thread_survives_a_bug_in_its_own_bookkeeping(tmp_path: Path) -> None:
    machine = Machine(tmp_path)
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, reclaim=False, interval="10ms")

    def broken(*args: object) -> float:
        raise RuntimeError("bookkeeping bug")

    # the interval fails, then telling that failure fails too
    monitor.next_interval_s = broken  # type: ignore[method-assign]
    monitor._failed = broken  # type: ignore[assignment]
    with monitor:
        ticks = monitor.ticks
        wait_until(lambda: monitor.ticks > ticks + 3, timeout_s=10, what="ticks go on")


def test_a_burst_tail_is_told_once_its_interval_is_over_without_a_new_refusal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="resguard")
    clock = ManualClock(0.0)
    refusals = RefusalLog("api", interval_s=10, clock=clock)
    for _ in range(1000):  # a concurrency burst at level OK: no level change ends it
        refusals.note("concurrency")
    flush_due_refusals()
    assert len(caplog.records) == 1  # the interval is not over: the tail waits
    clock.advance(10)
    flush_due_refusals()
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "api refused 1 request: concurrency; a summary follows at most every 10s while "
        "refusals go on",
        "api refused 999 requests in the last 10s: concurrency=999",
    ]
    clock.advance(10)
    flush_due_refusals()
    assert len(caplog.records) == 2  # nothing new: nothing said


def test_the_monitor_tick_tells_a_burst_tail(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="resguard")
    refusals = RefusalLog("api", interval_s=0.05)
    for _ in range(3):
        refusals.note("queue")
    machine = Machine(tmp_path)
    machine.set_used_percent(30)
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, reclaim=False, interval="10ms")

    def told() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("api ")]

    with monitor:
        wait_until(lambda: len(told()) == 2, timeout_s=10, what="the tail told by a tick")
    assert told()[1].startswith("api refused 2 requests in the last ")


class Nothing:
    """A reclaimable that never frees anything."""

    name = "nothing"
    cost = 1.0

    def reclaimable_bytes(self) -> int:
        return 0

    def reclaim(self, target_bytes: int) -> int:
        return 0


def test_a_ladder_with_nothing_to_free_says_so_once_per_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="resguard")
    clock = ManualClock(0.0)
    model = LazyModel(
        load=lambda: bytearray(16), size="1MiB", register=False, name="m", clock=clock
    )
    with model:
        pass
    clock.advance(3)
    ladder = Ladder(lambda: 1 << 30, extra=[Nothing(), model])
    for _ in range(50):  # a long WARNING climbs every 2 s
        ladder.run(1 << 20)

    def nothing_lines() -> list[str]:  # not the once-per-process note about other ladders'
        return [
            record.getMessage()
            for record in caplog.records
            if record.getMessage().startswith("reclaim: nothing left to reclaim")
        ]

    lines = nothing_lines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("reclaim: nothing left to reclaim (0 B of ")
    assert "held: m (used 3 s ago, min idle 30 s)" in lines[0]
    ladder.end_episode()  # back at OK
    ladder.run(1 << 20)
    assert len(nothing_lines()) == 2


class Freeing:
    """A reclaimable that claims what it is asked for."""

    name = "freeing"
    cost = 1.0

    def reclaimable_bytes(self) -> int:
        return 1 << 30

    def reclaim(self, target_bytes: int) -> int:
        return target_bytes


def test_a_step_that_freed_memory_is_an_info_line_one_that_did_not_is_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="resguard")
    ladder = Ladder(lambda: None, extra=[Nothing(), Freeing()])  # unmeasured: claims count
    ladder.run(1 << 20)
    levels = {
        record.__dict__["resguard_step"]: record.levelno
        for record in caplog.records
        if record.__dict__.get("resguard_event") == "reclaim_step"
    }
    assert levels == {
        "gc.collect": logging.DEBUG,
        "nothing": logging.DEBUG,
        "freeing": logging.INFO,
    }


def test_a_jump_to_critical_is_an_error_record_and_the_way_down_info(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="resguard")
    machine = Machine(tmp_path)
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, reclaim=False)
    for percent in (30, 60, 90, 60, 30):
        machine.set_used_percent(percent)
        monitor.sample_now()
    changes = [
        (record.getMessage().split(":")[0], record.levelno)
        for record in caplog.records
        if record.__dict__.get("resguard_event") == "level_change"
    ]
    assert changes == [
        ("level OK -> WARNING", logging.WARNING),
        ("level WARNING -> CRITICAL", logging.ERROR),
        ("level CRITICAL -> WARNING", logging.INFO),
        ("level WARNING -> OK", logging.INFO),
    ]


def test_a_monitor_back_at_ok_lets_its_ladder_say_nothing_is_left_again(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    machine = Machine(tmp_path)
    monitor = Monitor(policy=two_levels(), sampler=machine.sampler, psi_trigger=False)
    caplog.set_level(logging.INFO, logger="resguard")

    def said() -> int:
        return sum("nothing left to reclaim" in r.getMessage() for r in caplog.records)

    for percent in (60, 30, 60):
        machine.set_used_percent(percent)
        monitor.sample_now()
        if percent == 60:
            monitor.reclaim_now()
            monitor.reclaim_now()
    assert said() == 2  # one per WARNING episode


class ChangedOnce:
    """A set that a guard made in another thread changes while it is listed, once."""

    def __init__(self, items: list[RefusalLog]) -> None:
        self.items, self.changed = items, False

    def __iter__(self) -> Iterator[RefusalLog]:
        if not self.changed:
            self.changed = True
            raise RuntimeError("Set changed size during iteration")
        return iter(self.items)


def test_a_guard_made_while_a_tick_lists_the_refusal_logs_breaks_no_tick(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="resguard")
    clock = ManualClock(0.0)
    refusals = RefusalLog("api", interval_s=10, clock=clock)
    refusals.note("queue")
    refusals.note("queue")
    monkeypatch.setattr(log_module, "_REFUSAL_LOGS", ChangedOnce([refusals]))
    clock.advance(10)
    flush_due_refusals()
    assert caplog.records[-1].getMessage() == "api refused 1 request in the last 10s: queue=1"


def test_a_closed_stderr_breaks_no_log_call(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # the default handler writes
    monkeypatch.setattr(logging.getLogger("resguard"), "handlers", [log_module.DEFAULT_HANDLER])
    logging.getLogger("resguard.test").warning("a line nobody can read")  # raised ValueError
    RefusalLog("g").note("level")


def test_a_probes_fault_line_with_a_raising_handler_is_recorded_and_never_raises(
    raising: Raising, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every sampler and probe tells its faults through FaultLog: a user's broken handler
    must not turn a damaged kernel file into an exception in a request or a Monitor()."""
    from resguard._modules.faults import FaultLog

    faults = FaultLog(logging.getLogger("resguard.test"))
    raising.attach()
    assert faults.failed("/proc/meminfo", "garbage") is True
    assert faults.failing() == {"/proc/meminfo": "garbage"}
    assert faults.recovered("/proc/meminfo") is True
    assert raising.calls == 2
    assert capsys.readouterr().err.count("a logging handler raised RuntimeError") == 1
