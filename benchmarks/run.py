"""Run every benchmark module (or those named on the command line) and print one table.

Below the table: how many targets were met, and each one missed or not measured. The first
row is the empty call that every per-call timing subtracts (see ``_harness.per_call_s``).
"""

from __future__ import annotations

import importlib
import platform
import sys
import time
import traceback
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Table, empty_call_s, format_s

INSTALL = "the benchmarks need the bench extra: pip install -e '.[bench]', or run nox -s bench"


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    known = sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    if any(arg.startswith("-") for arg in argv):
        print(f"usage: run.py [NAME ...]   (names: {', '.join(known)}; none: all)")
        return 0 if {"-h", "--help"} & set(argv) else 2
    unknown = [n for n in argv if n.removeprefix("bench_") not in known]
    if unknown:
        print(
            f"run.py: no benchmark {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr
        )
        return 2
    names = argv or known
    table = Table()
    table.note(
        "a timed loop calling an empty function (subtracted from every per-call figure below)",
        format_s(empty_call_s()),
    )
    for name in names:
        module_name = name if name.startswith("bench_") else f"bench_{name}"
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:  # an alternative it times is not installed
            print(f"run.py: {module_name}: {error}; {INSTALL}", file=sys.stderr, flush=True)
            table.note(module_name, f"failed: {error} ({INSTALL})")
            continue
        print(f"running {module.__name__} ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        try:
            module.run(table)
        except Exception as error:  # one broken part must not cost the others' figures
            traceback.print_exc()
            table.note(f"{module.__name__}", f"failed: {type(error).__name__}: {error}")
        print(f"  {module.__name__}: {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    print(
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB\n"
    )
    print(table.markdown())
    print()
    print(table.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
