"""``%resguard_top`` and lists of process rows show command lines: escaped (nothing from a
command line becomes markup or a control character), cut to 120 characters, sizes in IEC
units. Against a real child process, in-process here and in a real Jupyter kernel in
tests/test_notebook.py (which reuses this file's child and table reader)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from resguard.processes import ProcessTable

pytest.importorskip("IPython")
from resguard.notebook import COMMAND_CHARS, processes_table

from support import wait_until

HOSTILE_ARG = "\x1b[2J<b>bold</b>\nsecond line\u202e"
SHOWN_ARG = r"\x1b[2J<b>bold</b>\nsecond line\u202e"
LONG_ARG = "x" * 300


class Table(HTMLParser):
    """An HTML table read back: its header, its rows of cell texts, every tag seen."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self._row = []
        elif tag in ("th", "td"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self.header:
                self.rows.append(self._row)
            else:
                self.header = self._row
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def read_table(html: str) -> Table:
    table = Table()
    table.feed(html)
    table.close()
    return table


@contextlib.contextmanager
def hostile_process() -> Iterator[subprocess.Popen[bytes]]:
    """A sleeping child whose command line holds markup, an escape, a newline, a bidi
    override and 300 more characters."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", HOSTILE_ARG, LONG_ARG]
    )
    try:
        wait_until(
            lambda: Path(f"/proc/{child.pid}/cmdline").read_bytes().count(b"\0") >= 5,
            what="the child's command line",
        )
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)


@pytest.fixture
def hostile_child() -> Iterator[subprocess.Popen[bytes]]:
    with hostile_process() as child:
        yield child


def row_of(table: Table, pid: int) -> dict[str, str]:
    rows = [dict(zip(table.header, row, strict=True)) for row in table.rows]
    found = [row for row in rows if row["pid"] == str(pid)]
    assert len(found) == 1, f"pid {pid} not in the table"
    return found[0]


def expected_command() -> str:
    whole = f"{sys.executable} -c import time; time.sleep(120) {SHOWN_ARG} {LONG_ARG}"
    return whole[: COMMAND_CHARS - 1] + "…"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for the child")
def test_a_process_table_shows_the_command_line_escaped_and_cut(
    hostile_child: subprocess.Popen[bytes],
) -> None:
    table = ProcessTable()
    rows = table.top(100_000, by="memory")
    html = processes_table(rows, "all processes")
    parsed = read_table(html)
    assert parsed.header == ["pid", "name", "CPU %", "RSS", "threads", "user", "command"]
    assert "b" not in parsed.tags  # the argument's <b> is text
    assert "\x1b" not in html
    assert "\n" not in html
    row = row_of(parsed, hostile_child.pid)
    assert row["command"] == expected_command()
    assert row["RSS"].endswith(("KiB", "MiB"))
    assert row["CPU %"].endswith("%")


def test_a_row_without_a_command_line_shows_its_name_in_brackets() -> None:
    import attrs

    from resguard.testing import make_process

    thread = attrs.evolve(make_process(7, "kworker/0:1\x1b"), cmdline=())
    html = processes_table([thread], "kernel")
    row = row_of(read_table(html), 7)
    assert row["command"] == r"[kworker/0:1\x1b]"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for the child")
def test_the_first_top_magic_shows_cpu_now_not_since_the_process_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that burnt a core for a second and sleeps now reads near 0 %, not its
    lifetime average, even with ``--interval 0`` (a second scan within the shortest CPU
    window kept the first scan's lifetime figures)."""
    from IPython.core.interactiveshell import InteractiveShell

    import resguard.notebook as notebook

    done = tmp_path / "burnt"
    burn = (
        "import sys, time\n"
        "start = time.process_time()\n"
        "while time.process_time() - start < 1.0:\n"
        "    pass\n"
        "open(sys.argv[1], 'w').close()\n"
        "time.sleep(120)\n"
    )
    shown: list[str] = []
    monkeypatch.setattr(notebook, "display", lambda value: shown.append(value.data))
    child = subprocess.Popen([sys.executable, "-c", burn, str(done)])
    shell: object = InteractiveShell.instance()
    try:
        wait_until(done.exists, what="the child's second of CPU")
        magics = notebook.ResguardMagics(shell)
        magics.resguard_top("-n 100000 --interval 0")
    finally:
        InteractiveShell.clear_instance()
        child.kill()
        child.wait(timeout=10)
    (html,) = shown
    cpu = float(row_of(read_table(html), child.pid)["CPU %"].rstrip("%"))
    assert cpu < 30.0  # its lifetime average is above 50 %
