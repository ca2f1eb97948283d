"""The ``resguard`` argument parser: each command module adds its own subcommand."""

from __future__ import annotations

import argparse

from resguard._probes.backend import BACKENDS, ENV_VAR, platform_backend
from resguard.cli import budget, docker, guardian, ollama, run, snapshot, top, watch
from resguard.cli._args import CommandParser, Parser, Version, backend_name

__all__ = ["build_parser"]

_COMMANDS = (
    snapshot,
    top,
    watch,
    guardian,
    docker,
    ollama,
    budget,
    run,
)  # the order --help lists them in


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="resguard", description="See memory and CPU pressure early and act on it.")
    parser.add_argument("--version", action=Version, help="print the version and exit")
    parser.add_argument(
        "--backend",
        type=backend_name,  # any case, as RESGUARD_BACKEND
        choices=BACKENDS,
        default=None,
        help=f"how to measure: linux (the kernel's files, container-aware) or psutil "
        f"(portable); default ${ENV_VAR}, else {platform_backend()} here",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=CommandParser
    )
    for command in _COMMANDS:
        command.add_parser(commands)
    return parser
