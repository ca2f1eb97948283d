"""Why the profile plot leaves USS out: one USS read against one profile sample, as this
process holds more resident memory.

USS comes from ``/proc/self/smaps_rollup`` (psutil's ``memory_full_info``), for which the
kernel walks every page table entry of the process: its cost grows with resident memory,
while a profile sample (a handful of small files) does not. Rows: at about 20 MiB, 200 MiB
and 1 GiB resident, a sample with and without USS.
Run: ``.venv/bin/python benchmarks/run.py uss``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from resguard.snapshot import Sampler

from _harness import Table, per_call_s


def run(table: Table) -> None:
    sampler = Sampler()
    for extra_mib in (0, 200, 1024):
        held = bytearray(extra_mib * 2**20)  # written by memset: resident at once
        rss = sampler.sample().process.rss or 0

        def with_uss() -> None:
            sampler.sample(uss=True)

        def without_uss() -> None:
            sampler.sample()

        table.compare(
            f"profile sample with USS at {rss / 2**20:.0f} MiB resident",
            per_call_s(with_uss, repeat=3),
            "the same sample without USS",
            per_call_s(without_uss, repeat=3),
        )
        del held
