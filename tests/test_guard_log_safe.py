"""A guard's log lines never raise into the request they are about (issue 16, round 2):
a handler whose emit() raises (a JSON formatter with a bug, a closed stream) turned an
admission that logs an unknown number into an exception (a 500, not the answer)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from resguard import Guard
from resguard.testing import StaticMonitor, make_snapshot, unknown_memory


class Broken(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.calls = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.calls += 1
        raise RuntimeError("the log pipeline is broken")

    def handle(self, record: logging.LogRecord) -> bool:  # no handleError safety net
        self.emit(record)
        return True


@pytest.fixture
def broken() -> Iterator[Broken]:
    handler = Broken()
    logger = logging.getLogger("resguard")
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


def test_an_admission_that_logs_an_unknown_number_is_admitted_through_a_raising_handler(
    broken: Broken,
) -> None:
    guard = Guard(memory="90%", reserve="1MiB",
                  monitor=StaticMonitor(unknown_memory(make_snapshot())))  # fmt: skip
    with guard:
        pass
    assert broken.calls >= 1  # the line was attempted, and its failure stayed in logging
    assert guard.stats().in_flight == 0
