"""The ``resguard`` command line: one module per command (``snapshot``, ``top``,
``watch``, ``docker``, ``ollama``, ``budget``, ``guardian``, ``run``), all printing through
one renderer (:mod:`resguard.cli._render`). ``run`` exits with its command's own code.

Exit codes: 0 success, 1 the verdict is not OK (``watch --once``, ``guardian --once``) or
a budget is over, 2 bad usage, a bad value, an unreachable service, an output that cannot
be written (``resguard: cannot write to standard output: No space left on device`` for
``> /dev/full``, ``...: it is closed`` for ``>&-``) or an internal error,
130 interrupted (Ctrl-C), 143 ended by SIGTERM (``watch``'s live view; the guardian
resumes what it paused and exits 0), 141 stdout was closed early (``resguard top --json |
head -1``), the status a shell reports for a program that SIGPIPE ended. ``--json``
prints machine-readable output on stdout.

``--backend linux|psutil`` (before the command) picks how every command measures, as
``RESGUARD_BACKEND`` does; a ``RESGUARD_BACKEND`` that names no backend is refused (exit
2) instead of being logged and ignored as the library does.

It never prints a traceback: every error is one line on stderr, ``resguard: internal
error: ...`` for an unexpected one (``RESGUARD_DEBUG=1`` adds the traceback). A figure
that could not be measured is shown as ``?``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from resguard._errors import ResguardError
from resguard._modules.log import set_default_level
from resguard.cli._args import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    choose_backend,
    command_name,
    error_line,
)
from resguard.cli._parser import build_parser as build_parser
from resguard.cli._render import OutputError, standard_output, tolerant
from resguard.cli.snapshot import format_snapshot as format_snapshot
from resguard.cli.top import format_processes as format_processes
from resguard.cli.watch import format_frame as format_frame
from resguard.cli.watch import format_line as format_line

__all__ = ["main"]


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of what is left in
    its buffer does not fail again on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    set_default_level(logging.WARNING)  # a command's stderr is for warnings and errors
    stream = tolerant(out) if out is not None else standard_output()
    command = "resguard"
    try:
        try:
            args = build_parser().parse_args(argv)  # a module global: tests replace it
        except SystemExit as done:  # --help, --version, a usage error (already on stderr)
            return done.code if isinstance(done.code, int) else EXIT_USAGE
        command = command_name(args)  # with docker's and ollama's subcommand
        args.own_process = argv is None  # the process's own command line, not a caller's
        choose_backend(args.backend)
        code = int(args.handler(args, stream))
        stream.flush()  # inside the try: a closed pipe shows here, not at exit
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `resguard top --json | head -1`: the reader has all it wants
        if out is None:
            _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OutputError as error:  # a full disk, a closed stdout: not a bug in resguard
        if out is None and sys.stdout is not None:
            _silence_stdout()  # what is left in the buffer would fail again at exit
        error_line(f"{command}: cannot write to standard output: {error.strerror or error}")
        return EXIT_USAGE
    except ResguardError as error:
        error_line(f"{command}: {error}")
        return EXIT_USAGE
    except ImportError as error:
        if error.name != "psutil":
            return _internal_error(error, command)
        error_line(
            f"{command}: psutil cannot be imported; the psutil backend needs it: "
            f"install it (pip install psutil){_or_linux()}"
        )
        return EXIT_USAGE
    except Exception as error:  # a bug in resguard: one line, never a traceback
        return _internal_error(error, command)


def _internal_error(error: Exception, command: str) -> int:
    if os.environ.get("RESGUARD_DEBUG"):
        import traceback

        traceback.print_exception(error)
    error_line(
        f"resguard: internal error: {type(error).__name__}: {error} (in "
        f"'{command}'; set RESGUARD_DEBUG=1 to see where, and please report it)"
    )
    return EXIT_USAGE


def _or_linux() -> str:
    return ", or use --backend linux" if sys.platform.startswith("linux") else ""
