"""``resguard run [--memory 64MiB] [--restart on-failure|always|never] -- CMD ARGS...``:
run a command under a memory budget and restart it by a policy, journalling each start
and exit (see docs/supervise.md).

Exit codes: the command's own (128 + N when signal N ended it, as shells report: 137
for an OOM kill), 127 when the command is not found (126: not executable), 2 for bad
usage or a budget that cannot be applied; ``--dry-run`` exits 0 after saying what it
would do.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
from typing import Any, TextIO

from resguard._errors import InvalidValue, ResguardError
from resguard._modules.render import printable
from resguard.cli._args import Commands, duration, error_line, non_negative_int

__all__ = ["add_parser", "run"]

_MIN_MEMORY_BYTES = 1 << 20  # below a MiB not even the wrapper can start
_NOT_FOUND, _NOT_EXECUTABLE = 127, 126
_SHOWN_DELAYS = 6
_FLAGS = {
    "restart": "--restart",
    "max_restarts": "--max-restarts",
    "backoff_s": "--backoff",
    "backoff_max_s": "--backoff-max",
    "stable_s": "--stable",
    "stop_timeout_s": "--stop-timeout",
}


def _memory(text: str) -> int:
    from resguard.units import parse_bytes

    try:
        value = parse_bytes(text)
    except InvalidValue as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if value < _MIN_MEMORY_BYTES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is too small for a memory budget; expected 1MiB or more, e.g. 64MiB"
        )
    return value


def _command(args: argparse.Namespace) -> tuple[str, ...]:
    words = list(args.argv)
    if words[:1] == ["--"]:
        words = words[1:]
    if not words:
        raise InvalidValue("no command given; expected: resguard run [options] -- CMD ARGS...")
    return tuple(words)


def _missing(program: str) -> tuple[int, str] | None:
    """The exit code and words when *program* cannot be run, as a shell would say."""
    if os.sep in program:
        if not os.path.exists(program):
            return _NOT_FOUND, f"{program!r}: no such file"
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            return _NOT_EXECUTABLE, f"{program!r}: not an executable file"
        return None
    if shutil.which(program) is None:
        return _NOT_FOUND, f"{program!r}: not found on PATH"
    return None


def _dry_run(config: object, out: TextIO) -> int:
    from resguard.supervise import RunConfig, choose_budget
    from resguard.units import format_duration

    assert isinstance(config, RunConfig)
    budget = choose_budget(config.memory_bytes, cgroup_parent=config.cgroup_parent)
    plan = config.plan()
    shown_restarts = min(plan.max_restarts, _SHOWN_DELAYS + 1)  # bounded: N may be huge
    delays = [format_duration(plan.backoff.delay_s(n)) for n in range(1, shown_restarts + 1)]
    shown = ", ".join(delays[:_SHOWN_DELAYS]) + (", …" if len(delays) > _SHOWN_DELAYS else "")
    restarts = (
        "never restarted"
        if config.restart == "never" or not delays
        else f"restarted {config.restart}, at most {plan.max_restarts} time(s) in a row "
        f"(waits {shown})"
    )
    out.write(
        printable(f"dry-run: would run {shlex.join(config.argv)}")
        + "\n"
        + printable(f"budget: {budget.describe()}")
        + "\n"
        + f"restarts: {restarts}; a run of {format_duration(config.stable_s)} or more resets "
        "the count and the backoff\n"
        + "journal: stderr"
        + (printable(f" and {config.journal}") if config.journal else "")
        + "\n"
    )
    return 0


def run(args: argparse.Namespace, out: TextIO) -> int:
    from resguard.supervise import DEFAULT_BACKOFF_MAX_S, RunConfig, RunJournal, Supervisor

    argv = _command(args)
    try:  # RunConfig checks the values; the error names the flag they came from
        config = RunConfig(
            argv,
            memory_bytes=args.memory,
            restart=args.restart,
            max_restarts=args.max_restarts,
            backoff_s=args.backoff,
            # not given: the default cap, or the first wait when that is longer
            backoff_max_s=max(DEFAULT_BACKOFF_MAX_S, args.backoff)
            if args.backoff_max is None
            else args.backoff_max,
            stable_s=args.stable,
            stop_timeout_s=args.stop_timeout,
            journal=args.journal,
            cgroup_parent=args.cgroup_parent,
        )
    except ResguardError as error:
        flag = _FLAGS.get(str(error).partition("=")[0])
        if flag is None:
            raise
        raise InvalidValue(f"{flag}: {error}") from None
    if args.dry_run:
        return _dry_run(config, out)
    missing = _missing(argv[0])
    if missing is not None:
        code, words = missing
        error_line(printable(f"resguard run: cannot run {words}"))
        return code
    previous = _hold_signals(lambda signum, frame: None)
    try:
        # sys.stderr is None when resguard was started with stderr closed: the file alone
        return Supervisor(config, RunJournal(config.journal, sys.stderr)).run()
    finally:
        if getattr(args, "own_process", False):
            _hold_signals(signal.SIG_IGN)  # the process exits now: nothing inherits it
        else:  # a caller's process goes on: its children must not inherit SIG_IGN
            for number, handler in previous.items():
                signal.signal(number, handler)


def _hold_signals(handler: Any) -> dict[int, Any]:
    """Hold the forwarded signals to the process's exit, returning the handlers they had:
    the supervisor gives back the handlers it found when it ends, and a stop signal
    between its end line and the exit (the interpreter's shutdown resets caught signals)
    must not end resguard with 143 in place of the command's code. A caught signal is reset
    by exec, so the command still gets the default actions; SIG_IGN is set only once the
    command is gone, and only in resguard's own process (an in-process caller's later
    children would inherit it)."""
    from resguard.supervise import FORWARDED

    return {
        number: signal.signal(number, handler)
        for number in (getattr(signal, name) for name in FORWARDED)
    }


def _add_restart_arguments(parser: argparse.ArgumentParser) -> None:
    from resguard import supervise as sv
    from resguard.units import format_duration

    parser.add_argument(
        "--restart",
        choices=sv.RESTART_POLICIES,
        default=sv.DEFAULT_RESTART,
        help="when to restart: on-failure (a non-zero exit, a signal, an OOM kill), always, "
        f"never (default {sv.DEFAULT_RESTART})",
    )
    parser.add_argument(
        "--max-restarts",
        type=non_negative_int,
        default=sv.DEFAULT_MAX_RESTARTS,
        metavar="N",
        help=f"restarts in a row before giving up (default {sv.DEFAULT_MAX_RESTARTS}; a "
        "stable run resets the count)",
    )
    # the durations are parsed here and checked by RunConfig (InvalidValue quoting them)
    parser.add_argument(
        "--backoff",
        type=duration,
        metavar="DURATION",
        default=sv.DEFAULT_BACKOFF_S,
        help=f"wait before the first restart ({format_duration(sv.DEFAULT_BACKOFF_S)})",
    )
    parser.add_argument(
        "--backoff-max",
        type=duration,
        metavar="DURATION",
        default=None,
        help=f"the doubling wait's cap, not below --backoff "
        f"({format_duration(sv.DEFAULT_BACKOFF_MAX_S)})",
    )
    parser.add_argument(
        "--stable",
        type=duration,
        default=sv.DEFAULT_STABLE_S,
        metavar="DURATION",
        help="a run this long (more than 0) resets the backoff and the restart count "
        f"({format_duration(sv.DEFAULT_STABLE_S)})",
    )
    parser.add_argument(
        "--stop-timeout",
        type=duration,
        default=sv.DEFAULT_STOP_TIMEOUT_S,
        metavar="DURATION",
        help="after a stop signal, SIGKILL the command if it still runs this long "
        f"({format_duration(sv.DEFAULT_STOP_TIMEOUT_S)})",
    )


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "run",
        help="run a command under a memory budget, restarting it by a policy",
        description="Run CMD in its own memory cgroup (as root or in a delegated one; else "
        "under RLIMIT_AS), forward signals to it, restart it by --restart with exponential "
        "backoff, and journal each start and exit; OOM kills are reported as such. Exits "
        "with the command's own code.",
        epilog="example: resguard run --memory 512MiB --restart on-failure --journal "
        "run.jsonl -- python serve.py. Exit code: the command's own (128 + N when signal N "
        "ended it: 137 for an OOM kill), 127 when it is not found, 126 when it cannot be "
        "run, 2 for bad usage.",
    )
    parser.add_argument(
        "--memory", type=_memory, default=None, metavar="SIZE", help="the budget, e.g. 64MiB"
    )
    _add_restart_arguments(parser)
    parser.add_argument("--journal", default=None, metavar="PATH", help="append JSON lines here")
    parser.add_argument(
        "--cgroup-parent",
        default=None,
        metavar="DIR",
        help="make the command's cgroup below DIR (default: this process's own cgroup)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be done, start nothing"
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS")
    parser.set_defaults(handler=run)
