"""A guard's sizes need a unit (issue 16, round 2, R1 #11): ``Guard(vram="90")`` was 90
bytes (refusing everything where 90 % was meant) and ``vram=1.5`` became "2 B"; memory=
and rss= read the same way. A share of ``vram`` reads as the GPU's memory."""

from __future__ import annotations

import pickle

import pytest

from resguard import Guard, InvalidValue
from resguard.units import Amount


@pytest.mark.parametrize("what", ["memory", "rss", "vram"])
@pytest.mark.parametrize("value", ["90", " 90 ", "1e9", "1_000", 1.5, 0.25])
def test_a_number_without_a_unit_is_refused_naming_what_it_would_have_meant(
    what: str, value: object
) -> None:
    with pytest.raises(InvalidValue, match=rf"^{what}=.* has no unit; expected a size") as info:
        Guard(**{what: value})  # type: ignore[arg-type]
    of = "of the GPU's memory" if what == "vram" else "of the effective memory limit"
    assert f"a share {of} such as '90%'" in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("90%", Amount("90%")), ("20GiB", Amount("20GiB")), (2**30, Amount(2**30)),
     (float(2**30), Amount(2**30))],
)  # fmt: skip
def test_sizes_with_a_unit_shares_and_whole_bytes_are_accepted(
    value: object, expected: Amount
) -> None:
    assert Guard(vram=value).vram == expected  # type: ignore[arg-type]
    assert Guard(memory=value).stats() is not None  # type: ignore[arg-type]


def test_a_vram_share_reads_as_the_gpus_memory_and_survives_a_pickle() -> None:
    vram = Guard(vram="90%").vram
    assert str(vram) == "90% of the GPU's memory"
    assert str(pickle.loads(pickle.dumps(vram))) == "90% of the GPU's memory"
    assert str(Guard(vram="8GiB").vram) == "8.0 GiB"
