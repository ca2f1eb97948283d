"""``resguard docker stats|limits``: containers' memory against their limits, and the
containers without one (needs the ``docker`` extra)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from resguard.cli._args import EXIT_USAGE, Commands, command_name, integration
from resguard.cli._render import Column, print_json, table

if TYPE_CHECKING:
    from resguard.docker import ContainerLimits, Containers
    from resguard.snapshot import ContainersInfo

__all__ = ["add_parser", "cli", "run"]

_STATS = ("CONTAINER ID", "NAME", "IMAGE", "MEM USED", "LIMIT", "MEM %", "CPU %", "PIDS")
_LIMITS = ("CONTAINER ID", "NAME", "IMAGE", "MEMORY", "MEM+SWAP", "CPUS", "PIDS")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _size(value: int | None) -> str:
    from resguard.units import format_bytes

    return "none" if value is None else format_bytes(value)


def _fitted(titles: tuple[str, ...], rows: Sequence[Sequence[str]]) -> str:
    return table([Column(title) for title in titles], rows, gap="  ", strip=True)


def _stats_text(info: ContainersInfo) -> str:
    from resguard.units import format_bytes

    items = sorted(info.items, key=lambda item: item.memory_used, reverse=True)
    rows = [
        (
            item.id[:12],
            item.name,
            item.image,
            format_bytes(item.memory_used),
            _size(item.memory_limit),
            _percent(item.memory_percent),
            _percent(item.cpu_percent),
            "-" if item.pids is None else str(item.pids),
        )
        for item in items
    ]
    total = f"{len(items)} running, {format_bytes(info.memory.total)} in total"
    return f"{_fitted(_STATS, rows)}\n{total}\n"


def _limits_text(limits: Sequence[ContainerLimits]) -> str:
    """The limits table, containers without a memory limit first, and what to do."""
    from resguard.units import format_bytes

    rows = [
        (
            item.id[:12],
            item.name,
            item.image,
            _size(item.memory_limit),
            "unlimited" if item.memswap_limit is None else format_bytes(item.memswap_limit),
            "none" if item.cpus is None else f"{item.cpus:g}",
            "none" if item.pids_limit is None else str(item.pids_limit),
        )
        for item in sorted(limits, key=lambda item: (item.has_memory_limit, item.name))
    ]
    unlimited = [item.name for item in limits if not item.has_memory_limit]
    if unlimited:
        summary = (
            f"{len(unlimited)} of {len(limits)} running containers have no memory "
            f"limit: {', '.join(unlimited)} (set one with "
            "`docker update --memory 2g --memory-swap 2g NAME`)"
        )
    else:
        summary = f"all {len(limits)} running containers have a memory limit"
    return f"{_fitted(_LIMITS, rows)}\n{summary}\n"


def _limits(engine: Containers, *, as_json: bool, out: TextIO) -> None:
    limits = engine.limits(all=True)
    if as_json:
        print_json([item.to_dict() for item in limits], out)
    else:
        out.write(_limits_text(limits))


def _stats(engine: Containers, *, as_json: bool, out: TextIO, cpu_sample_s: float) -> None:
    import time

    engine.stats()
    if cpu_sample_s > 0:
        time.sleep(cpu_sample_s)  # a second reading, so CPU percent covers the interval
    info = engine.info()
    if as_json:
        print_json(info.to_dict(), out)
    else:
        out.write(_stats_text(info))


def cli(
    command: str,
    *,
    as_json: bool,
    out: TextIO,
    err: TextIO | None = None,
    containers: Containers | None = None,
    cpu_sample_s: float = 0.5,
) -> int:
    """``resguard docker stats|limits``: print a table (or JSON) and return the exit code.

    0 on success; 2 when the engine cannot be reached (message on *err*, default stderr).
    ``stats`` reads twice, *cpu_sample_s* apart, to show CPU percent.
    """
    import sys

    from resguard._errors import DockerError
    from resguard.docker import Containers

    err = err if err is not None else sys.stderr
    if command not in ("stats", "limits"):
        err.write(f"resguard docker: unknown command {command!r}; use stats or limits\n")
        return EXIT_USAGE
    engine = containers if containers is not None else Containers()
    try:
        if command == "stats":
            _stats(engine, as_json=as_json, out=out, cpu_sample_s=cpu_sample_s)
        else:
            _limits(engine, as_json=as_json, out=out)
        return 0
    except DockerError as exc:
        err.write(f"resguard docker {command}: {exc}\n")
        return EXIT_USAGE
    finally:
        if containers is None:
            engine.close()


def run(args: argparse.Namespace, out: TextIO) -> int:
    if integration("resguard.docker", command_name(args)) is None:
        return EXIT_USAGE
    return cli(args.subcommand, as_json=args.json, out=out)


def add_parser(commands: Commands) -> None:
    docker = commands.add_parser(
        "docker", help="containers' memory, limits (needs the docker extra)"
    )
    docker.add_argument("subcommand", choices=("stats", "limits"), metavar="stats|limits")
    docker.add_argument("--json", action="store_true", help="print JSON")
    docker.set_defaults(handler=run)
