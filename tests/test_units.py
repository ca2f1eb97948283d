"""Sizes, durations and percentages as people type them."""

from __future__ import annotations

import copy
import datetime as dt
import math
import pickle
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard import InvalidType, InvalidValue, ResguardError
from resguard.units import (
    MAX_BYTES,
    MAX_SECONDS,
    Amount,
    format_bytes,
    format_duration,
    parse_bytes,
    parse_duration,
    parse_percent,
    resolve_bytes,
    shown,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MiB", 512 * 2**20),
        ("512Mi", 512 * 2**20),  # Kubernetes
        ("2GB", 2 * 10**9),  # SI
        ("2gb", 2 * 10**9),
        ("2g", 2 * 2**30),  # Docker, JVM
        ("2G", 2 * 2**30),
        ("1.5 GiB", int(1.5 * 2**30)),
        ("1e9", 10**9),  # scientific notation, bytes
        ("1.5e3KB", 1_500_000),
        ("kB", 1000),  # a bare unit means one of it
        ("MiB", 2**20),
        ("100", 100),
        ("100 B", 100),
        ("100 bytes", 100),
        ("  7 kib  ", 7 * 1024),
        ("5.", 5),
        (".5KiB", 512),
        (0, 0),
        (4096, 4096),
        (1.6, 2),
    ],
)
def test_parse_bytes_accepts_the_forms_in_the_wild(text: str | int, expected: int) -> None:
    assert parse_bytes(text) == expected


BAD_SIZES = ["20 GB/s", "-1", "nan", "85%%", "", "1.2.3GB", "GB GB", "12 parsecs", "1e999GB"]


@pytest.mark.parametrize("bad", [*BAD_SIZES, -1, float("nan"), float("inf"), -0.5])
def test_parse_bytes_rejects_garbage_naming_it(bad: object) -> None:
    with pytest.raises(InvalidValue) as info:
        parse_bytes(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)
    assert "512MiB" in str(info.value)  # shows the accepted forms
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ResguardError)


@pytest.mark.parametrize("bad", [True, False, None, [1], b"1GB"])
def test_parse_bytes_rejects_wrong_types_with_type_error(bad: object) -> None:
    with pytest.raises(InvalidType, match="is not a size"):
        parse_bytes(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse_bytes(bad)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=2**60), st.booleans())
def test_format_bytes_parses_back_within_rounding(n: int, binary: bool) -> None:
    text = format_bytes(n, binary=binary, precision=3)
    back = parse_bytes(text)
    assert math.isclose(back, n, rel_tol=1e-3, abs_tol=1)


@given(
    st.integers(min_value=0, max_value=2**50),
    st.sampled_from(["KiB", "MiB", "GiB", "kB", "MB", "GB", "k", "m", "g"]),
)
def test_integer_amounts_of_a_unit_are_exact(amount: int, unit: str) -> None:
    factors = {
        "KiB": 2**10,
        "MiB": 2**20,
        "GiB": 2**30,
        "kB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "k": 2**10,
        "m": 2**20,
        "g": 2**30,
    }
    if amount * factors[unit] < 2**53:  # float precision of the parser
        assert parse_bytes(f"{amount}{unit}") == amount * factors[unit]


def test_format_bytes_reads_well() -> None:
    assert format_bytes(1536 * 2**20) == "1.5 GiB"
    assert format_bytes(999) == "999 B"
    assert format_bytes(2 * 10**9, binary=False) == "2.0 GB"
    assert format_bytes(-3 * 2**20) == "-3.0 MiB"
    with pytest.raises(InvalidType):
        format_bytes("1GB")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("2m30s", 150.0),
        ("10us", 1e-5),
        ("10µs", 1e-5),
        ("500ns", 5e-7),
        ("2d", 172800.0),
        ("30", 30.0),
        ("0", 0.0),
        (5, 5.0),
        (0.25, 0.25),
        (dt.timedelta(minutes=2), 120.0),
    ],
)
def test_parse_duration(text: object, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "5 minutes",
        "1h30",
        "-5s",
        "1.2.3s",
        "s",
        "5x",
        "nan",
        -1,
        float("inf"),
        dt.timedelta(seconds=-1),
    ],
)
def test_parse_duration_rejects_garbage(bad: object) -> None:
    with pytest.raises(InvalidValue) as info:
        parse_duration(bad)  # type: ignore[arg-type]
    assert "1h30m" in str(info.value)


def test_parse_duration_rejects_bool() -> None:
    with pytest.raises(InvalidType):
        parse_duration(True)


@given(
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=999),
)
def test_go_durations_add_up(hours: int, minutes: int, millis: int) -> None:
    assert parse_duration(f"{hours}h{minutes}m{millis}ms") == pytest.approx(
        hours * 3600 + minutes * 60 + millis / 1000
    )


def test_format_duration() -> None:
    assert format_duration(0.25) == "250ms"
    assert format_duration(42) == "42s"
    assert format_duration(330) == "5m30s"
    assert format_duration(7500) == "2h05m"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("85%", 85.0), ("85", 85.0), (85, 85.0), ("0%", 0.0), (" 99.5 % ".replace(" %", "%"), 99.5)],
)
def test_parse_percent(text: object, expected: float) -> None:
    assert parse_percent(text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["85%%", "101%", "-5%", "%", "abc", 100.5, float("nan")])
def test_parse_percent_rejects_garbage(bad: object) -> None:
    with pytest.raises(InvalidValue, match="is not a percentage"):
        parse_percent(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidType):
        parse_percent(True)


def test_resolve_bytes_reads_percent_of_the_limit() -> None:
    assert resolve_bytes("50%", 1000) == 500
    assert resolve_bytes("2KiB", 1000) == 2048
    with pytest.raises(InvalidValue):
        resolve_bytes("50%%", 1000)


# ------------------------------------------------ exact integers, overflow, hostile input ---


def test_parse_bytes_keeps_integers_exact() -> None:
    assert parse_bytes(10**17 + 1) == 10**17 + 1
    assert parse_bytes("100000000000000001") == 10**17 + 1
    assert parse_bytes("100000000000000001 B") == 10**17 + 1
    assert parse_bytes(MAX_BYTES) == 2**64
    assert resolve_bytes("100%", 10**17 + 1) == 10**17 + 1
    assert resolve_bytes("50%", 10**17 + 2) == 5 * 10**16 + 1


@given(st.integers(min_value=0, max_value=2**64))
def test_every_integer_size_parses_back_exactly(n: int) -> None:
    assert parse_bytes(n) == n
    assert parse_bytes(str(n)) == n
    assert parse_bytes(f" {n} bytes ") == n


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1EiB", 2**60),
        ("1Ei", 2**60),
        ("1e", 2**60),
        ("2E", 2**61),
        ("1EB", 10**18),
        ("1eb", 10**18),
        ("16EiB", 2**64),
        ("1.5EiB", 3 * 2**59),
    ],
)
def test_exa_units(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


def test_exa_units_format_and_parse_back() -> None:
    assert format_bytes(3 * 2**59) == "1.5 EiB"
    assert format_bytes(2 * 10**18, binary=False) == "2.0 EB"
    assert parse_bytes(format_bytes(3 * 2**59)) == 3 * 2**59


HUGE = [
    10**400,
    -(10**400),
    10**5000,
    2**64 + 1,
    1e300,
    "1e999",
    "17EiB",
    "1e999999999GB",
    "1" * 400,
]


@pytest.mark.parametrize("bad", HUGE, ids=lambda value: shown(value)[:40])
@pytest.mark.parametrize(
    "function",
    [parse_bytes, parse_duration, parse_percent, lambda value: resolve_bytes(value, 1000)],
    ids=["parse_bytes", "parse_duration", "parse_percent", "resolve_bytes"],
)
def test_values_beyond_range_are_invalid_values_quoted_as_typed(function: Any, bad: object) -> None:
    if function is parse_duration and bad == "17EiB":
        bad = "1e999999s"
    with pytest.raises(InvalidValue) as info:
        function(bad)
    message = str(info.value)
    if isinstance(bad, str):
        assert repr(bad) in message
        assert "inf" not in message.split(";")[0]
    elif isinstance(bad, int) and bad.bit_length() < 10_000:
        assert repr(bad) in message
    else:
        assert "is not" in message


def test_an_unknown_limit_is_a_type_error_not_a_crash() -> None:
    with pytest.raises(InvalidType, match="None"):
        resolve_bytes("50%", None)  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        resolve_bytes("50%", float("nan"))  # type: ignore[arg-type]
    with pytest.raises(InvalidType):
        resolve_bytes("50%", "1GiB")  # type: ignore[arg-type]


def test_formatting_never_overflows() -> None:
    assert format_bytes(10**400).endswith(" EiB")
    assert format_bytes(10**5000).endswith(" EiB")
    assert format_bytes(-(10**400), binary=False).startswith("-")
    assert format_duration(10**400).endswith("h")
    assert format_duration(1e300).endswith("h")


_NUMBER_TEXT = st.from_regex(
    r"\A\s*[0-9]{0,30}\.?[0-9]{0,30}(e[+-]?[0-9]{1,12})?\s*"
    r"(B|k|KiB|mb|Gi|tb|PiB|e|EB|EiB|%|ms|s|m|h|d|ns|x)?\s*\Z"
)
ANYTHING = st.one_of(
    st.text(),
    _NUMBER_TEXT,
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**60, max_value=10**600),
    st.integers(max_value=-1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.just(10**400),
    st.just(float("nan")),
    st.just(float("inf")),
    st.just(float("-inf")),
    st.timedeltas(),
    st.binary(),
    st.lists(st.integers(), max_size=2),
)
DOCUMENTED = (InvalidValue, InvalidType)


@given(ANYTHING)
def test_parse_bytes_returns_an_exact_size_or_a_documented_error(value: object) -> None:
    try:
        result = parse_bytes(value)  # type: ignore[arg-type]
    except DOCUMENTED:
        return
    assert isinstance(result, int)
    assert 0 <= result <= MAX_BYTES


@given(ANYTHING)
def test_parse_duration_returns_seconds_or_a_documented_error(value: object) -> None:
    try:
        result = parse_duration(value)  # type: ignore[arg-type]
    except DOCUMENTED:
        return
    assert isinstance(result, float)
    assert 0 <= result <= MAX_SECONDS


@given(ANYTHING)
def test_parse_percent_returns_a_percentage_or_a_documented_error(value: object) -> None:
    try:
        result = parse_percent(value)  # type: ignore[arg-type]
    except DOCUMENTED:
        return
    assert isinstance(result, float)
    assert 0 <= result <= 100


@given(ANYTHING, ANYTHING)
def test_resolve_bytes_returns_bytes_or_a_documented_error(value: object, limit: object) -> None:
    try:
        result = resolve_bytes(value, limit)  # type: ignore[arg-type]
    except DOCUMENTED:
        return
    assert isinstance(result, int)
    assert result >= 0


@given(ANYTHING, st.booleans())
def test_formatting_returns_text_or_a_documented_error(value: object, binary: bool) -> None:
    calls: list[Callable[[], str]] = [
        lambda: format_bytes(value, binary=binary),  # type: ignore[arg-type]
        lambda: format_duration(value),  # type: ignore[arg-type]
    ]
    for format_call in calls:
        try:
            assert isinstance(format_call(), str)
        except DOCUMENTED:
            pass


@pytest.mark.parametrize("n_bytes", [1e300, -1e300, 2.0**1000, 10**400, 1e30])
def test_format_bytes_of_a_huge_float_is_short_not_a_wall_of_digits(n_bytes: float) -> None:
    text = format_bytes(n_bytes)
    assert len(text) < 20, text
    assert text.endswith("EiB")


def test_shown_of_an_object_whose_repr_raises_names_its_type() -> None:
    from resguard.units import shown

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert shown(Hostile()).endswith(".Hostile that cannot be shown>")
    with pytest.raises(InvalidType):
        parse_duration(Hostile())  # type: ignore[arg-type]


# --- Amount: one meaning of "bytes or a share of the limit" everywhere ---------------------


@given(st.integers(min_value=1, max_value=2**62), st.integers(min_value=1, max_value=100))
def test_amount_share_resolves_against_the_limit_given_each_time(limit: int, percent: int) -> None:
    amount = Amount(f"{percent}%")
    assert amount.is_share
    assert amount.bytes is None
    assert amount.resolve(limit) == int(percent / 100 * limit)
    assert amount.resolve(limit * 2) == int(percent / 100 * limit * 2)  # not frozen
    assert amount.resolve(None) is None  # a share of an unknown limit is unknown


def test_amount_fixed_bytes_ignore_the_limit() -> None:
    amount = Amount("512MiB")
    assert not amount.is_share
    assert amount.bytes == 512 * 2**20
    assert amount.resolve(None) == amount.resolve(1) == 512 * 2**20
    assert Amount(amount) == amount == Amount(512 * 2**20)
    assert hash(Amount("1KiB")) == hash(Amount(1024))
    assert repr(Amount("50%")) == "Amount('50%')"
    assert str(Amount("50%")) == "50% of the limit"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, InvalidValue),
        ("0%", InvalidValue),
        ("150%", InvalidValue),
        ("x", InvalidValue),
        (True, InvalidType),
        (None, InvalidType),
        ([1], InvalidType),
    ],
)
def test_amount_rejects_what_is_not_an_amount_quoting_it(value: object, error: type) -> None:
    with pytest.raises(error, match=re.escape(repr(value))):
        Amount(value)  # type: ignore[arg-type]


def test_amount_zero_allowed_when_asked_and_immutable() -> None:
    assert Amount(0, positive=False).resolve(None) == 0
    with pytest.raises(AttributeError):
        Amount(1).bytes = 2


def test_amount_cannot_lose_an_attribute_and_positive_must_be_a_bool() -> None:
    amount = Amount("1KiB")
    with pytest.raises(AttributeError, match="immutable"):
        del amount.bytes
    assert amount.bytes == 1024
    with pytest.raises(InvalidType, match="positive='no'"):
        Amount(0, positive="no")  # type: ignore[arg-type]


@pytest.mark.parametrize("typed", [0, "0%", "0B", "512MiB", "50%"])
def test_amount_pickles_and_copies_to_an_equal_amount_zero_included(typed: int | str) -> None:
    amount = Amount(typed, positive=False)
    for copied in (pickle.loads(pickle.dumps(amount)), copy.copy(amount), copy.deepcopy(amount)):
        assert copied == amount
        assert copied.typed == typed
        assert copied.resolve(2**30) == amount.resolve(2**30)


@pytest.mark.parametrize("typed", ["0\x1f%", " 85 %", "85\x1c%", "\x1f85%"])
def test_parse_percent_reads_whitespace_the_pattern_allows_before_the_sign(typed: str) -> None:
    assert parse_percent(typed) == float(typed.strip().rstrip("%").strip())
