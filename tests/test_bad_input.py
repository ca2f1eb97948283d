"""Every public function that takes a size, duration or percentage rejects garbage the
same way: a ValueError or TypeError (from resguard's hierarchy) naming the value, and
nothing half-built or half-applied."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import resguard as rg
from resguard import InvalidType, InvalidValue

GARBAGE = ["20 GB/s", -1, float("nan"), "85%%", True]

SIZES: dict[str, Callable[[Any], object]] = {
    "parse_bytes": rg.parse_bytes,
    "resolve_bytes": lambda v: rg.resolve_bytes(v, 1000),
    "Guard(memory=)": lambda v: rg.Guard(memory=v),
    "Guard(rss=)": lambda v: rg.Guard(rss=v),
    "Guard(reserve=)": lambda v: rg.Guard(reserve=v),
    "Guard.admit(reserve=)": lambda v: rg.Guard().admit(reserve=v),
    "LRUCache(max_bytes=)": lambda v: rg.LRUCache(max_bytes=v),
    "memoize(max_bytes=)": lambda v: rg.memoize(max_bytes=v),
    "LazyModel(size=)": lambda v: rg.LazyModel(load=object, size=v),
    "ModelPool(budget=)": lambda v: rg.ModelPool(budget=v),
    "Threshold(memory.used)": lambda v: rg.Threshold("memory.used", ">", v),
    "LeakDetector(growth=)": lambda v: rg.LeakDetector("process.rss", growth=v, window="10m"),
    "limit_self": lambda v: rg.limit_self(v),
}
DURATIONS: dict[str, Callable[[Any], object]] = {
    "parse_duration": rg.parse_duration,
    "Guard(wait=)": lambda v: rg.Guard(wait=v),
    "Guard(max_age=)": lambda v: rg.Guard(max_age=v),
    "Monitor(interval=)": lambda v: rg.Monitor(interval=v, reclaim=False),
    "LRUCache(ttl=)": lambda v: rg.LRUCache(max_items=1, ttl=v),
    "LazyModel(idle_ttl=)": lambda v: rg.LazyModel(load=object, size=1, idle_ttl=v),
    "Threshold(for_=)": lambda v: rg.Threshold("memory.percent", ">", 80, for_=v),
    "LeakDetector(window=)": lambda v: rg.LeakDetector("process.rss", growth="50MB", window=v),
    "TimeToLimit(within=)": lambda v: rg.TimeToLimit(within=v),
    "profile(interval=)": lambda v: rg.profile(interval=v),
}
PERCENTS: dict[str, Callable[[Any], object]] = {
    "parse_percent": rg.parse_percent,
    "Monitor(reclaim_to=)": lambda v: rg.Monitor(reclaim_to=v, reclaim=False),
    "Threshold(memory.percent)": lambda v: rg.Threshold("memory.percent", ">", v),
}

CASES = [(name, fn, value) for table in (SIZES, DURATIONS, PERCENTS)
         for name, fn in table.items() for value in GARBAGE]


@pytest.mark.parametrize(("name", "build", "value"), CASES,
                         ids=[f"{name}-{value!r}" for name, _, value in CASES])
def test_garbage_is_rejected_naming_the_value(name: str, build: Callable[[Any], object],
                                              value: object) -> None:
    with pytest.raises((InvalidValue, InvalidType)) as info:
        build(value)
    assert isinstance(info.value, (ValueError, TypeError))
    assert repr(value) in str(info.value) or str(value) in str(info.value), str(info.value)


def test_a_rejected_limit_leaves_the_process_limits_alone() -> None:
    import resource

    before = resource.getrlimit(resource.RLIMIT_DATA)
    with pytest.raises(InvalidValue):
        rg.limit_self("20 GB/s")
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
