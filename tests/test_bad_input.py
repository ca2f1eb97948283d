"""Every public function that takes a size, duration or percentage rejects garbage the
same way: a ValueError or TypeError (from resguard's hierarchy) naming the value, and
nothing half-built or half-applied."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import resguard as rg
from resguard import InvalidType, InvalidValue

GARBAGE = ["20 GB/s", -1, float("nan"), "85%%", True, 10**400, "1e999"]

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

CASES = [
    (name, fn, value)
    for table in (SIZES, DURATIONS, PERCENTS)
    for name, fn in table.items()
    for value in GARBAGE
]


@pytest.mark.parametrize(
    ("name", "build", "value"), CASES, ids=[f"{name}-{value!r}" for name, _, value in CASES]
)
def test_garbage_is_rejected_naming_the_value(
    name: str, build: Callable[[Any], object], value: object
) -> None:
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


def _stopper(**kwargs: Any) -> object:
    from resguard.reclaim import ProcessStopper

    return ProcessStopper(**{"patterns": ["^no-such-program$"], **kwargs})


def _gc(value: object) -> object:
    from resguard.reclaim import GarbageCollect

    return GarbageCollect(max_share=value)  # type: ignore[arg-type]


# Issue 11, items 20 and 21: each escaped the tree (a raw TypeError, ValueError, re.error,
# FileNotFoundError) or was accepted silently although it cannot work.
REFUSED: dict[str, tuple[Callable[[], object], str]] = {
    "ProcessStopper(['('])": (lambda: _stopper(patterns=["("]), "'('"),
    "ProcessStopper(None)": (lambda: _stopper(patterns=None), "None"),
    "ProcessStopper(enabled='false')": (lambda: _stopper(enabled="false"), "'false'"),
    "top_processes(None)": (lambda: rg.top_processes(None), "None"),  # type: ignore[arg-type]
    "top_processes(by=None)": (lambda: rg.top_processes(by=None), "None"),  # type: ignore[arg-type]
    "Threshold(op=[])": (lambda: rg.Threshold("memory.percent", [], 80), "[]"),  # type: ignore[arg-type]
    "Threshold(memory.percent > 150)": (lambda: rg.Threshold("memory.percent", ">", 150), "150"),
    "Guard(retry_after=None)": (lambda: rg.Guard(retry_after=None), "None"),  # type: ignore[arg-type]
    "Guard(retry_after='x')": (lambda: rg.Guard(retry_after="x"), "'x'"),
    "Guard(retry_after=nan)": (lambda: rg.Guard(retry_after=float("nan")), "nan"),
    "Guard(retry_after=-5)": (lambda: rg.Guard(retry_after=-5), "-5"),
    "Guard(memory='0%')": (lambda: rg.Guard(memory="0%"), "'0%'"),
    "Guard(monitor=5)": (lambda: rg.Guard(monitor=5), "5"),  # type: ignore[arg-type]
    "Guard(name=123)": (lambda: rg.Guard(name=123), "123"),  # type: ignore[arg-type]
    "resolve_bytes('50%', None)": (lambda: rg.resolve_bytes("50%", None), "None"),  # type: ignore[arg-type]
    "ModelPool(budget=type)": (lambda: rg.ModelPool(budget=type), "type"),  # type: ignore[arg-type]
    "ModelPool(budget='0%')": (lambda: rg.ModelPool(budget="0%"), "'0%'"),
    "Monitor(policy=False)": (lambda: rg.Monitor(policy=False, reclaim=False), "False"),  # type: ignore[arg-type]
    "Monitor(interval='1ns')": (lambda: rg.Monitor(interval="1ns", reclaim=False), "'1ns'"),
    "Monitor(cgroup='/nonexistent')": (
        lambda: rg.Monitor(cgroup="/nonexistent", reclaim=False),
        "/nonexistent",
    ),
    "Sampler(cgroup=5)": (lambda: rg.Sampler(cgroup=5), "5"),  # type: ignore[arg-type]
    "GarbageCollect(max_share='x')": (lambda: _gc("x"), "'x'"),
    "limit_self('0%')": (lambda: rg.limit_self("0%"), "'0%'"),
    "limit_self('0.0001%')": (lambda: rg.limit_self("0.0001%"), "'0.0001%'"),
    "limit_self(1)": (lambda: rg.limit_self(1), "1"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_escaped_or_was_accepted_is_refused_in_the_tree(name: str) -> None:
    import resource

    build, quoted = REFUSED[name]
    before = resource.getrlimit(resource.RLIMIT_DATA)
    with pytest.raises((InvalidValue, InvalidType)) as info:
        build()
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    assert quoted in str(info.value), str(info.value)


def test_a_huge_number_is_quoted_as_typed_not_as_inf() -> None:
    for parse in (rg.parse_bytes, rg.parse_duration, rg.parse_percent):
        with pytest.raises(InvalidValue) as info:
            parse("1e999")
        assert "'1e999'" in str(info.value)
        assert "inf" not in str(info.value).replace("'1e999'", "")
