"""Run every benchmark module (or those named on the command line) and print one table."""

from __future__ import annotations

import importlib
import platform
import sys
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))

from _harness import Table


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = argv or sorted(p.stem for p in here.glob("bench_*.py"))
    table = Table()
    for name in names:
        module = importlib.import_module(name if name.startswith("bench_") else f"bench_{name}")
        print(f"running {module.__name__} ...", file=sys.stderr, flush=True)
        module.run(table)
    print(f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
          f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB\n")
    print(table.markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
