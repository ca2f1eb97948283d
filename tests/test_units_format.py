"""format_size: the one formatter of a measured size that people read (IEC units,
unknown for None, never an exception for a number)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard.units import format_bytes, format_size, parse_bytes


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (200_000_000, "190.7 MiB"),
        (3 * 2**30, "3.0 GiB"),
        (-(2**20), "-1.0 MiB"),
        (None, "unknown"),
        (math.nan, "nan"),
        (math.inf, "inf"),
    ],
)
def test_sizes_read_by_people_are_iec(value: int | float | None, text: str) -> None:
    assert format_size(value) == text


def test_unknown_is_said_as_the_caller_words_it() -> None:
    assert format_size(None, unknown="—") == "—"


@given(st.integers(min_value=0, max_value=2**64))
def test_format_size_is_format_bytes_in_iec_and_parses_back(n_bytes: int) -> None:
    text = format_size(n_bytes)
    assert text == format_bytes(n_bytes)
    assert not any(unit in text for unit in (" kB", " MB", " GB", " TB", " PB", " EB"))
    assert parse_bytes(text) == pytest.approx(n_bytes, rel=0.05, abs=1)
