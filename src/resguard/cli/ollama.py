"""``resguard ollama ps|unload NAME...``: the models loaded in Ollama, and unloading them
with confirmation (needs the ``ollama`` extra)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from resguard.cli._args import EXIT_USAGE, Commands, command_name, integration
from resguard.cli._render import Column, print_json, table

if TYPE_CHECKING:
    from resguard.snapshot import OllamaModelInfo

__all__ = ["FOREVER_AFTER_S", "add_parser", "cli", "format_models", "run"]

FOREVER_AFTER_S = 20 * 365.25 * 86400.0  # the ollama CLI's "Forever" threshold
_COLUMNS = tuple(Column(title) for title in ("NAME", "SIZE", "PROCESSOR", "UNTIL", "IDLE"))


def _until(info: OllamaModelInfo, now: float) -> str:
    from resguard.units import format_duration

    if info.expires_at is None:
        return "-"
    left = info.expires_at - now
    if left > FOREVER_AFTER_S:
        return "Forever"
    if left < 0:
        return "Stopping..."
    return format_duration(left)


def format_models(infos: Sequence[OllamaModelInfo], now: float) -> str:
    """The ``ps`` table; *now* is wall-clock seconds (``expires_at`` and ``idle_since``
    are wall-clock)."""
    from resguard.units import format_bytes, format_duration

    rows = [
        (
            info.name,
            format_bytes(info.size),
            info.processor,
            _until(info, now),
            "-" if info.idle_since is None else format_duration(max(0.0, now - info.idle_since)),
        )
        for info in infos
    ]
    return table(_COLUMNS, rows, gap="  ", strip=True)


def _ps(models: Any, *, as_json: bool, out: TextIO) -> None:
    import time

    infos = models.loaded()
    if as_json:
        print_json({"host": models.host, "models": [info.to_dict() for info in infos]}, out)
    else:
        out.write(format_models(infos, time.time()) + "\n")


def _unload(models: Any, names: Sequence[str], *, as_json: bool, out: TextIO) -> None:
    from resguard.ollama import canonical
    from resguard.units import format_bytes

    results = []
    for name in names:
        freed = models.unload(name)
        results.append({"name": canonical(name), "freed_bytes": freed})
        if not as_json:
            out.write(
                f"unloaded {canonical(name)}"
                f"{f' ({format_bytes(freed)})' if freed else ' (was not loaded)'}\n"
            )
    if as_json:
        print_json({"host": models.host, "unloaded": results}, out)


def _usage_error(command: str, names: Sequence[str]) -> str | None:
    if command not in ("ps", "unload"):
        return f"resguard ollama: unknown command {command!r}; expected 'ps' or 'unload'"
    if command == "unload" and not names:
        return "resguard ollama unload: name at least one model, e.g. llama3.2:3b"
    if command == "ps" and names:
        return "resguard ollama ps: takes no model names"
    return None


def cli(
    command: str,
    names: list[str],
    *,
    host: str | None,
    as_json: bool,
    out: TextIO,
    err: TextIO | None = None,
) -> int:
    """``resguard ollama ps|unload NAME...``; returns the exit code: 0 done, 1 Ollama
    answered an error (e.g. an unknown model), 2 bad usage or Ollama unreachable (no
    answer: down, too slow, connection dropped), as ``resguard docker`` does."""
    import sys

    from resguard._errors import InvalidType, InvalidValue, OllamaError
    from resguard.ollama import OllamaModels

    err = err or sys.stderr
    problem = _usage_error(command, names)
    if problem is not None:
        print(problem, file=err)
        return EXIT_USAGE
    try:
        with OllamaModels(host, register=False) as models:
            if command == "ps":
                _ps(models, as_json=as_json, out=out)
            else:
                _unload(models, names, as_json=as_json, out=out)
            return 0
    except (OllamaError, InvalidValue, InvalidType) as error:
        print(f"resguard ollama {command}: {error}", file=err)
        answered = isinstance(error, OllamaError) and error.status_code is not None
        return 1 if answered else EXIT_USAGE


def run(args: argparse.Namespace, out: TextIO) -> int:
    if integration("resguard.ollama", command_name(args)) is None:
        return EXIT_USAGE
    return cli(args.subcommand, args.names, host=args.host, as_json=args.json, out=out)


def add_parser(commands: Commands) -> None:
    ollama = commands.add_parser("ollama", help="models loaded in Ollama (needs the ollama extra)")
    ollama.add_argument("subcommand", choices=("ps", "unload"), metavar="ps|unload")
    ollama.add_argument("names", nargs="*", metavar="NAME", help="models to unload")
    ollama.add_argument(
        "--host", default=None, help="the Ollama server (default $OLLAMA_HOST or 127.0.0.1:11434)"
    )
    ollama.add_argument("--json", action="store_true", help="print JSON")
    ollama.set_defaults(handler=run)
