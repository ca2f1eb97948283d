"""What every command shares: the parser that reports a usage error in one line, argument
types, exit codes, the one-line error writer, the import of an optional integration and
the CPU window of a one-shot (``--window``: read, wait, read again)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, TypeAlias, TypeVar

from resguard._errors import ResguardError
from resguard._probes.backend import BACKENDS

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

    from resguard.processes import ProcessTable
    from resguard.snapshot import ProcessInfo, Sampler, Snapshot

__all__ = [
    "DEFAULT_WINDOW_S",
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "CommandParser",
    "Commands",
    "Parser",
    "Version",
    "Window",
    "add_window_argument",
    "backend_name",
    "choose_backend",
    "command_name",
    "duration",
    "error_line",
    "integration",
    "measure_window",
    "non_negative_int",
    "over_window",
    "period",
    "positive_int",
    "window_seconds",
]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell shows for `yes | head -1` with pipefail


Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What a command module's ``add_parser`` adds its subcommand to."""


def error_line(text: str) -> None:
    """*text* as exactly one line on stderr (a closed stderr is not worth a traceback)."""
    line = " ".join(text.split()) or "resguard: error"
    if sys.stderr is None:  # started with stderr closed (2>&-)
        return
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def choose_backend(name: str | None) -> None:
    """Make *name* (``--backend``) the process's sensing backend from now on, and its
    children's (through ``RESGUARD_BACKEND``); without it, refuse a ``RESGUARD_BACKEND``
    that names no backend (the library only logs it; a command would measure with
    another backend than the user asked for)."""
    from resguard._probes import backend

    if name is None:
        error = backend.env_backend_error()
        if error is not None:
            raise error
        return
    chosen = backend.checked_backend(name)  # the only step that can fail: then neither
    # the default samplers and tables are kept per backend: one measured before (main()
    # called in-process) does not hold the new default back
    backend.set_default_backend(chosen)
    os.environ[backend.ENV_VAR] = chosen  # children see it


def backend_name(text: str) -> str:
    """``--backend``: a backend name as typed in a shell, in any case and with surrounding
    whitespace (as ``RESGUARD_BACKEND`` takes it)."""
    from resguard._probes.backend import typed_backend

    typed = typed_backend(text)
    if typed is None:
        quoted = repr(text) if len(text) <= 80 else f"{text[:80]!r}… ({len(text)} characters)"
        raise argparse.ArgumentTypeError(
            f"{quoted} names no sensing backend; expected linux or psutil"
        )
    return typed


def command_name(args: argparse.Namespace) -> str:
    """The command as typed, for its error lines: ``resguard snapshot``, and with the
    subcommand of ``docker`` and ``ollama`` (``resguard docker stats``)."""
    words = ["resguard", getattr(args, "command", None), getattr(args, "subcommand", None)]
    return " ".join(word for word in words if isinstance(word, str))


def integration(module: str, command: str) -> Any:
    """Import an integration module, or explain on stderr (as *command*) which extra to
    install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        error_line(f"{command}: {error}")
        return None


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; expected 0 or more")
    return value


def positive_int(text: str) -> int:
    """A count of 1 or more (``watch --count``: 0 would stop before the first update)."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is less than 1; expected a count of 1 or more")
    return value


def duration(text: str) -> float:
    from resguard.units import parse_duration

    try:
        return parse_duration(text)
    except ResguardError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def period(text: str) -> float:
    """A refresh period: a duration of at least 1 ms (0 would be a busy loop)."""
    seconds = duration(text)
    if seconds < 0.001:
        raise argparse.ArgumentTypeError(
            f"{text!r} is too short; expected a period of 1ms or more, e.g. 1s"
        )
    return seconds


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (with where to find help)."""

    def error(self, message: str) -> NoReturn:
        error_line(f"{self.prog}: {message} (see '{self.prog} --help')")
        raise SystemExit(EXIT_USAGE)

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        """``--help`` on stdout as every command writes it: a full or closed stdout is
        one line and exit 2 from main (argparse dropped the error and exited 0)."""
        if file is not None and file is not sys.stdout:
            super()._print_message(message, file)
            return
        if message:
            from resguard.cli._render import standard_output

            out = standard_output()
            out.write(message)
            out.flush()


class CommandParser(Parser):
    """A command's parser: it refuses what it does not know itself, in the command's own
    name (``resguard docker stats: unrecognized arguments: ...``; argparse leaves it to
    the top parser, whose error says only ``resguard:``), and says where an option of
    the top parser, ``--backend``, goes."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            prog = " ".join([self.prog, *_subcommand(parsed)])
            hint = _backend_hint(extras, prog)
            error_line(
                f"{prog}: unrecognized arguments: {' '.join(extras)}{hint} "
                f"(see '{self.prog} --help')"
            )
            self.exit(EXIT_USAGE)  # argparse's own exit, as error() is a usage error
        return parsed, extras


def _subcommand(parsed: argparse.Namespace) -> list[str]:
    subcommand = getattr(parsed, "subcommand", None)
    return [subcommand] if isinstance(subcommand, str) else []


def _backend_hint(extras: Sequence[str], prog: str) -> str:
    """Where ``--backend`` goes, when it was given after the command."""
    for index, word in enumerate(extras):
        if word == "--backend" or word.startswith("--backend="):
            value = word.partition("=")[2] or "".join(extras[index + 1 : index + 2])
            value = value.strip().lower() if value.strip().lower() in BACKENDS else "psutil"
            before, _, after = prog.partition(" ")
            return f"; --backend goes before the command: {before} --backend {value} {after}"
    return ""


class Version(argparse.Action):
    """``--version``, reading the installed version only when asked."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str = argparse.SUPPRESS,
        default: str = argparse.SUPPRESS,
        help: str | None = None,
    ) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> NoReturn:
        import resguard
        from resguard.cli._render import standard_output

        out = standard_output()  # a full or closed stdout: one line from main, not a bug
        out.write(f"resguard {resguard.__version__}\n")
        out.flush()
        raise SystemExit(0)


DEFAULT_WINDOW_S = 1.0
"""How long a one-shot (``snapshot``, ``top``, ``watch --once``) measures CPU over."""

_WINDOW_MAX_S = 3600.0  # an hour: longer is a typo (``--window 1d``), not a measurement
_T = TypeVar("_T")


def window_seconds(text: str) -> float:
    """``--window``: a duration (``1``, ``1.5s``, ``500ms``) above 0 and at most an hour."""
    seconds = duration(text)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a window; expected a duration above 0, e.g. 1s or 500ms"
        )
    if seconds > _WINDOW_MAX_S:
        raise argparse.ArgumentTypeError(
            f"{text!r} is too long a window; expected at most 1h, e.g. 1s"
        )
    return seconds


def add_window_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--window SECONDS`` (:data:`DEFAULT_WINDOW_S` by default) to *parser*."""
    from resguard._probes.procfs import CPU_WINDOW_MIN_S

    parser.add_argument(
        "--window",
        type=window_seconds,
        default=DEFAULT_WINDOW_S,
        metavar="SECONDS",
        help=f"measure CPU over this long (default {DEFAULT_WINDOW_S:g}s, e.g. 2s or 500ms); "
        f"CPU is measured over at least {CPU_WINDOW_MIN_S:g}s, so a shorter window is "
        f"raised to {CPU_WINDOW_MIN_S:g}s",
    )


def _wait_until(
    deadline_s: float, clock: Callable[[], float], sleep: Callable[[float], Any]
) -> None:
    """Wait until *clock* reads *deadline_s* (in slices, so a clock that jumps or a sleep
    cut short by a signal neither ends the wait early nor stretches it)."""
    while (left_s := deadline_s - clock()) > 0:
        sleep(min(left_s, 0.25))


def over_window(
    window_s: float,
    read: Callable[[], _T],
    *,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Any] | None = None,
) -> _T:
    """*read* once (the baseline), wait *window_s* (at least the shortest CPU window), and
    return a second *read*, whose CPU figures then cover the window. Ctrl-C during the
    wait raises :class:`KeyboardInterrupt`, which the command line turns into exit 130."""
    return _over(window_s, read, clock, sleep)[0]


def _over(
    window_s: float,
    read: Callable[[], _T],
    clock: Callable[[], float] | None,
    sleep: Callable[[float], Any] | None,
) -> tuple[_T, float]:
    """:func:`over_window`'s second read and the seconds it waited: *window_s*, raised to
    the shortest CPU window (the one place that clamp is made)."""
    import time

    from resguard._probes.procfs import CPU_WINDOW_MIN_S

    clock = clock if clock is not None else time.monotonic
    sleep = sleep if sleep is not None else time.sleep
    measured_s = max(window_s, CPU_WINDOW_MIN_S)
    read()
    _wait_until(clock() + measured_s, clock, sleep)
    return read(), measured_s


class Window(NamedTuple):
    """What :func:`measure_window` read at the end of its window (``None``: not asked for)."""

    snapshot: Snapshot | None
    """The sampler's second sample: ``cpu.percent`` and ``process.cpu_percent`` over the
    window."""
    rows: list[ProcessInfo] | None
    """The table's second scan, every process's CPU percent over the window (pass them to
    ``ProcessTable.top(rows=...)`` to rank them)."""
    window_s: float
    """The seconds measured over: the window asked for, at least the shortest CPU window
    (what ``snapshot`` reports, not the window typed)."""


def measure_window(
    window_s: float,
    *,
    sampler: Sampler | Callable[..., Snapshot] | None = None,
    processes: ProcessTable | None = None,
    uss: bool = False,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Any] | None = None,
) -> Window:
    """Read *sampler* and *processes*, wait *window_s* and read both again, so that every
    CPU figure of the answer covers the window (a sampler's first sample knows no CPU
    percent, a table's first scan only each process's lifetime average; a process that
    started during the window is measured over its life, all inside the window).

    *sampler* is a :class:`~resguard.snapshot.Sampler` or a function taking its
    ``sample`` keywords (``resguard.snapshot.snapshot``: the default sampler). *uss* asks
    the second sample for the unique set size."""
    from resguard.snapshot import Sampler

    sample = sampler.sample if isinstance(sampler, Sampler) else sampler
    both: list[Any] = [None, None]
    first = [True]

    def read() -> None:
        if sample is not None:  # the baseline needs neither USS nor the children walk
            both[0] = sample(uss=uss and not first[0], children=not first[0])
        if processes is not None:
            both[1] = processes.sample()
        first[0] = False

    _, measured_s = _over(window_s, read, clock, sleep)
    return Window(snapshot=both[0], rows=both[1], window_s=measured_s)
