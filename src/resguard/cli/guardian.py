"""``resguard guardian``: judge this machine by the ``[guardian]`` policy and act on it
(notify, unload idle Ollama models, renice, pause or stop processes opted in by
``match``), journalling every action; ``--once`` for cron and tests; ``--install`` writes
a systemd user unit or a launchd agent and enables nothing.

Exit codes: 0 (stopped by SIGTERM or Ctrl-C, everything paused resumed; ``--once``: the
verdict is OK; ``--install``: written), 1 (``--once``: the verdict is not OK), 2 (a bad
configuration or argument, a unit that exists without ``--force``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from resguard._errors import InvalidValue
from resguard._modules.render import printable
from resguard.cli._args import Commands, add_window_argument, duration, over_window
from resguard.cli._render import print_json

if TYPE_CHECKING:
    from resguard.guardian import Guardian, GuardianConfig

__all__ = ["add_parser", "run"]

_PLATFORMS = ("linux", "macos")
_STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")


def _config(args: argparse.Namespace) -> GuardianConfig:
    import attrs

    from resguard.guardian import load_config
    from resguard.units import format_duration

    config = load_config(args.config)
    changes: dict[str, Any] = {}
    if args.dry_run:
        changes["dry_run"] = True
    if args.journal is not None:
        changes["journal"] = args.journal
    if args.interval is not None:
        changes["interval_s"] = args.interval
        try:  # the configuration's own bounds, as for the file's interval
            return attrs.evolve(config, **changes)
        except InvalidValue as error:  # the value as typed, not interval_s=0.001
            problem = str(error).split(": ", 1)[-1]
            typed = format_duration(args.interval)
            raise InvalidValue(f"--interval {typed}: {problem}") from None
    return attrs.evolve(config, **changes) if changes else config


def _start_line(config: GuardianConfig) -> str:
    mode = "dry-run: nothing is signalled or unloaded" if config.dry_run else "ACTING"
    where = config.path or "no config file found: the defaults"
    actions = ", ".join(f"{a.do} when {a.when}" for a in config.actions) or "none"
    journal = config.journal or "none (log only)"
    return printable(  # a rule's name or a path is the file's text: one line, escaped
        f"guardian started ({mode}); config {where}; preset {config.preset}; "
        f"{len(config.rules)} rule(s) of its own; actions: {actions}; journal {journal}; "
        f"every {config.interval_s:g}s"
    )


@contextmanager
def _logging_to_stderr() -> Iterator[None]:
    """The guardian's log (its start line, one line per action) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s resguard: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("resguard")
    previous = logger.level
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM, SIGINT, SIGHUP (a closed terminal) and SIGQUIT set *stop* (the loop then
    resumes what it paused and ends)."""
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: object) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for name in _STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                previous[int(signum)] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def _once(guardian: Guardian, args: argparse.Namespace, out: TextIO) -> int:
    try:
        state = over_window(args.window, guardian.observe)
        lines: list[dict[str, Any]] = []
        guardian.journal.listeners.append(lines.append)
        verdict = guardian.act(state)
    finally:
        guardian.close()
    if args.json:
        print_json({"verdict": verdict.to_dict(), "actions": lines}, out)
    else:
        out.write(f"{printable(verdict.reason)}\n")
    return 0 if verdict.ok else 1


def _guard(args: argparse.Namespace, out: TextIO) -> int:
    from resguard.guardian import Guardian

    config = _config(args)
    guardian = Guardian(config, once=args.once)
    with _logging_to_stderr():
        logging.getLogger("resguard.guardian").info("%s", _start_line(config))
        if args.once:
            return _once(guardian, args, out)
        stop = threading.Event()
        with _stop_on_signals(stop):
            guardian.run(stop)
        logging.getLogger("resguard.guardian").info(
            "guardian stopped after %d evaluation(s)", guardian.ticks
        )
    return 0


def _install(args: argparse.Namespace, out: TextIO) -> int:
    from resguard.guardian import (
        check_path,
        enable_hint,
        guardian_command,
        launchd_plist,
        load_config,
        systemd_unit,
        unit_path,
    )

    platform = args.platform or ("macos" if sys.platform == "darwin" else "linux")
    if args.output is not None:
        path = Path(check_path(args.output, "--output"))
    else:
        path = unit_path(platform)
        home = os.environ.get("HOME") or str(Path.home())
        if not os.path.isdir(home):  # a tree made under /nonexistent runs nothing at login
            raise InvalidValue(f"HOME={home!r} is not a directory; set HOME or pass --output")
    if args.config is not None:
        load_config(check_path(args.config, "--config"))  # a unit that fails every login: no
    command = guardian_command(args.config)
    if platform == "macos":
        data = launchd_plist(command, str(Path.home() / "Library" / "Logs"))
    else:
        data = systemd_unit(command).encode()
    if path.is_dir():
        raise InvalidValue(f"{path} is a directory; --output names the unit file to write")
    if (path.exists() or path.is_symlink()) and not args.force:
        raise InvalidValue(f"{path} exists; pass --force to overwrite it")
    _write(path, data)
    out.write(f"wrote {path}\nto run the guardian at login: {enable_hint(platform, path)}\n")
    out.write("nothing was enabled or started.\n")
    return 0


def _write(path: Path, data: bytes) -> None:
    """Write *data* at *path* through a new file renamed over it: a symlink at *path* is
    replaced, never followed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as error:
        raise InvalidValue(f"{path} cannot be written ({error.strerror or error})") from None


def run(args: argparse.Namespace, out: TextIO) -> int:
    for flag in ("platform", "output", "force"):
        if getattr(args, flag) not in (None, False) and not args.install:
            raise InvalidValue(f"--{flag} goes with --install")
    if args.install:
        return _install(args, out)
    if args.json and not args.once:
        raise InvalidValue("--json goes with --once (the running guardian logs and journals)")
    return _guard(args, out)


def add_parser(commands: Commands) -> None:
    guardian = commands.add_parser(
        "guardian",
        help="watch this machine and act on the [guardian] policy (dry-run by default)",
        description="Judge this machine by the [guardian] policy of resguard.toml and act on "
        "it, journalling every action. Dry-run unless the file says dry_run = false.",
    )
    guardian.add_argument(
        "--config",
        default=None,
        metavar="PATH",
        help="a TOML file with a [guardian] table (default: ./resguard.toml, a "
        "pyproject.toml with [tool.resguard.guardian], then the user config directory)",
    )
    guardian.add_argument("--once", action="store_true", help="evaluate and act once, then exit")
    guardian.add_argument("--journal", default=None, metavar="PATH", help="append JSON lines here")
    guardian.add_argument(
        "--dry-run",
        action="store_true",
        help="only say what would be done (whatever the file says)",
    )
    guardian.add_argument(
        "--interval", type=duration, default=None, help="time between evaluations (default 2s)"
    )
    guardian.add_argument("--json", action="store_true", help="--once: print the verdict as JSON")
    add_window_argument(guardian)
    guardian.add_argument(
        "--install", action="store_true", help="write a systemd user unit or launchd agent"
    )
    guardian.add_argument(
        "--platform",
        choices=_PLATFORMS,
        default=None,
        help="--install: the unit for this platform (default: this one)",
    )
    guardian.add_argument("--output", default=None, metavar="PATH", help="--install: write here")
    guardian.add_argument("--force", action="store_true", help="--install: overwrite")
    guardian.set_defaults(handler=run)
