# IPython's magic decorators are untyped:
# mypy: disable-error-code="misc,no-untyped-call,untyped-decorator"
"""The IPython extension: ``%load_ext resguard``, then ``%%resguard`` and ``%resguard_top``.

``%%resguard`` on the first line of a cell runs the cell once under :func:`resguard.profile`
and shows the summary table and the memory/CPU plot below the cell's own output::

    %%resguard --interval 50ms --tracemalloc --label load
    data = load_everything()

Options: ``--interval`` (default ``100ms``), ``--uss-interval`` (default ``1s``; ``off``
turns USS off), ``--tracemalloc``, ``--no-children``, ``--no-plot``, ``--label TEXT`` and
``--out NAME`` (store the :class:`resguard.profile.Profile` in that variable; it is always
stored in ``_resguard_profile`` too).

``%resguard_top [-n 10] [--by cpu|memory] [--group] [--all] [--interval 0.5s]`` shows the
top processes as an HTML table with their command lines (control characters escaped, cut
to 120 characters; a process without one shows ``[name]``). The kernel's own threads are
left out unless ``--all`` (:func:`resguard.processes.is_kernel_thread`). CPU percent is of
one core (100 = one full core, as ``top`` counts) and measured since the previous
``%resguard_top`` (the first one waits ``--interval``, at least 0.25 s, the shortest window
a CPU percent is measured over: a shorter wait showed each process's average since it
started). Sizes are in IEC units (KiB, MiB,
GiB), as everywhere resguard shows them.

Snapshots, states, verdicts, profiles and budget reports render as HTML tables on their own
(``_repr_html_``); the extension also shows a list of process rows
(``rg.top_processes()``) as a table, and lets a bare matplotlib ``Figure`` (what
``prof.plot()`` returns) show as PNG when pyplot's inline backend was never activated.
"""

from __future__ import annotations

import io
import time
from typing import Any

try:
    from IPython.core.error import UsageError
    from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
    from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
    from IPython.display import HTML, Image, display
except ImportError as error:  # pragma: no cover - exercised by the import test
    raise ImportError(
        "resguard.notebook needs IPython: pip install 'resguard[notebook]' "
        "(from a checkout of resguard: pip install -e '.[notebook]')"
    ) from error

from resguard._errors import ResguardError
from resguard._modules.render import command_text, percent_text, rows_table
from resguard._probes.procfs import CPU_WINDOW_MIN_S
from resguard.processes import ProcessTable, is_kernel_thread
from resguard.profile import Profile
from resguard.snapshot import ProcessInfo
from resguard.units import format_size, parse_duration

__all__ = ["ResguardMagics", "figure_png", "load_ipython_extension", "processes_table"]

COMMAND_CHARS = 120
"""How much of a command line a process table shows (the rest is cut with ``…``)."""


def processes_table(rows: list[ProcessInfo], title: str) -> str:
    """Process rows as an HTML table: pid, name, the processes a grouped row stands for,
    CPU (100% = one core), RSS, threads, user and the command line; every text escaped."""
    grouped = any(row.count > 1 for row in rows)
    columns = ["pid", "name", *(["procs"] if grouped else []), "CPU %", "RSS", "threads"]
    cells = []
    for row in rows:
        cells.append(
            [
                str(row.pid),
                row.name,
                *([str(row.count)] if grouped else []),
                percent_text(row.cpu_percent),
                format_size(row.rss),
                str(row.num_threads),
                row.username or "?",
                command_text(row.cmdline, row.name, width=COMMAND_CHARS),
            ]
        )
    numeric = frozenset(index for index, column in enumerate(columns) if column != "name")
    return rows_table([*columns, "user", "command"], cells, title, numeric=numeric)


def figure_png(figure: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure rendered to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


@magics_class
class ResguardMagics(Magics):
    """``%%resguard`` (profile a cell) and ``%resguard_top`` (top processes)."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._table: ProcessTable | None = None

    @magic_arguments()
    @argument("--interval", default="100ms", help="time between samples (default 100ms)")
    @argument("--uss-interval", default="1s", help="time between USS reads, or 'off'")
    @argument("--tracemalloc", action="store_true", help="also trace Python allocations")
    @argument("--no-children", action="store_true", help="leave out child processes")
    @argument("--no-plot", action="store_true", help="show the summary only")
    @argument("--label", default=None, help="a name for the summary and the plot")
    @argument("--out", default=None, help="store the Profile in this variable")
    @cell_magic
    def resguard(self, line: str, cell: str) -> None:
        """Run the cell once under resguard.profile(); show the summary and the plot."""
        args = parse_argstring(self.resguard, line)
        uss = None if str(args.uss_interval).lower() in ("off", "none", "0") else args.uss_interval
        try:
            prof = Profile(
                args.interval,
                children=not args.no_children,
                tracemalloc=args.tracemalloc,
                uss_interval=uss,
                label=_unquote(args.label),
            )
        except ResguardError as error:  # IPython shows a UsageError as one line
            raise UsageError(f"%%resguard: {error}") from None
        shell = self.shell
        assert shell is not None
        with prof:
            shell.run_cell(cell, store_history=False)
        shell.user_ns["_resguard_profile"] = prof
        if args.out:
            shell.user_ns[args.out] = prof
        display(HTML(prof._repr_html_()))
        if not args.no_plot:
            try:
                figure = prof.plot()
            except ImportError as error:
                display(HTML(f"<p>no plot: {error}</p>"))
            else:
                display(Image(data=figure_png(figure), format="png"))

    @magic_arguments()
    @argument("-n", type=int, default=10, help="rows (default 10)")
    @argument("--by", choices=("cpu", "memory"), default="cpu", help="sort order")
    @argument("--group", action="store_true", help="one row per process name")
    @argument("--all", action="store_true", help="also show the kernel's own threads")
    @argument(
        "--interval",
        default="0.5s",
        help="on the first call, measure CPU over this long (default 0.5s)",
    )
    @line_magic
    def resguard_top(self, line: str) -> None:
        """Show the top processes by CPU or memory as an HTML table."""
        args = parse_argstring(self.resguard_top, line)
        try:
            first_wait_s = parse_duration(args.interval)
        except ResguardError as error:
            raise UsageError(f"%resguard_top: --interval: {error}") from None
        if args.n < 0:
            raise UsageError(f"%resguard_top: -n {args.n} is negative; expected 0 or more rows")
        if self._table is None:
            # a table's first scan knows each process's average since it started, and a
            # second within the shortest CPU window keeps it: wait at least that window
            self._table = ProcessTable()
            self._table.sample()
            time.sleep(max(first_wait_s, CPU_WINDOW_MIN_S))
        scan = self._table.sample()
        if not args.all:
            scan = [row for row in scan if not is_kernel_thread(row)]
        rows = self._table.top(args.n, by=args.by, group=args.group, rows=scan)
        display(HTML(processes_table(rows, f"top {args.n} processes by {args.by}")))


def _unquote(text: str | None) -> str | None:
    if text and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _process_rows_html(rows: Any) -> str | None:
    """HTML for a list of process rows (``rg.top_processes()``); ``None`` for other lists,
    which IPython then shows as usual."""
    if rows and all(isinstance(row, ProcessInfo) for row in rows):
        return processes_table(list(rows), f"{len(rows)} processes")
    return None


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics, a PNG formatter for bare matplotlib figures, and an HTML table
    for lists of process rows (where no other extension formats lists already)."""
    ipython.register_magics(ResguardMagics)
    formatters = ipython.display_formatter.formatters
    png = formatters["image/png"]
    try:
        png.lookup_by_type("matplotlib.figure.Figure")
    except KeyError:
        png.for_type_by_name("matplotlib.figure", "Figure", figure_png)
    html = formatters["text/html"]
    for sequence in (list, tuple):
        try:
            html.lookup_by_type(sequence)
        except KeyError:
            html.for_type(sequence, _process_rows_html)
