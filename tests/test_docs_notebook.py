"""Every ``ipython`` block of the notebook tutorial runs as pasted into IPython (issue 16, 9).

Sybil runs a page's ``python`` blocks; docs/tutorials/notebook.md's cells are ``ipython``
blocks (``%load_ext resguard``, ``%%resguard``, ``%resguard_top``) that it cannot run. This
test runs them, in the page's order, in one IPython shell in a fresh interpreter (IPython's
shell is a process-wide singleton), in a scratch folder (a cell writes ``run.csv``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from plugins.integration import unavailable

PAGE = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "notebook.md"

RUN_CELLS = """
import re, sys
from IPython.core.interactiveshell import InteractiveShell
blocks = re.findall(r"```ipython\\n(.*?)```", open(sys.argv[1]).read(), re.S)
shell = InteractiveShell.instance()
for number, block in enumerate(blocks):
    result = shell.run_cell(block, store_history=True)
    error = result.error_before_exec or result.error_in_exec
    print(f"CELL {number} {'ok' if error is None else 'failed: ' + repr(error)}", flush=True)
print("CELLS", len(blocks))
"""


def test_every_ipython_cell_of_the_page_runs(tmp_path: Path) -> None:
    if importlib.util.find_spec("IPython") is None:  # CI installs the notebook extra
        unavailable("IPython is not installed (pip install resguard[notebook])")
    done = subprocess.run(
        [sys.executable, "-c", RUN_CELLS, str(PAGE)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    cells = [line for line in done.stdout.splitlines() if line.startswith("CELL ")]
    count = int(done.stdout.rsplit("CELLS ", 1)[1])
    assert count == PAGE.read_text().count("```ipython\n") > 0, done.stdout  # every cell found
    assert cells == [f"CELL {n} ok" for n in range(count)], done.stdout + done.stderr
    assert (tmp_path / "run.csv").stat().st_size > 0
