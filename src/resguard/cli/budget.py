"""``resguard budget [--config FILE] [--json]``: each component's memory against its
budget, and the efficiency score."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TextIO

from resguard.cli._args import EXIT_USAGE, Commands
from resguard.cli._render import Column, print_json, table

if TYPE_CHECKING:
    from resguard.budget import BudgetReport, ComponentUse

__all__ = ["add_parser", "cli", "format_report", "run"]

_COLUMNS = (
    Column("COMPONENT", "<", 16, cut=16),
    Column("KIND", "<", 9),
    Column("USE", ">", 10),
    Column("BUDGET", ">", 17),
    Column("STATUS", "<", 11),
    Column("MATCHES"),
)


def _row(item: ComponentUse) -> tuple[str, ...]:
    from resguard.budget import Budget
    from resguard.units import format_size

    budget = Budget(item.name, item.kind, item.pattern, item.min_bytes, item.max_bytes)
    if item.used is None:
        use, matches = "—", item.detail[:100]
    else:
        use = format_size(item.used)
        shown = ", ".join(item.members[:3]) + (", …" if item.count > 3 else "")
        matches = f"{item.count}" + (f" ({shown})" if shown else "")
    return (item.name, item.kind, use, budget.range_text, item.status, matches)


def format_report(report: BudgetReport) -> str:
    """The report as a fixed-width table followed by the score."""
    score = "n/a (nothing measured)" if report.score is None else f"{report.score:.0f}/100"
    return (
        table(_COLUMNS, [_row(item) for item in report.components])
        + f"\n\nefficiency score: {score} (share of the measured bytes within budget)"
    )


def cli(config: str | None, *, as_json: bool, out: TextIO) -> int:
    """``resguard budget [--config FILE] [--json]``: exit 0 when every component is within
    budget, 1 when one is over, 2 when the configuration is bad (message on stderr)."""
    import sys

    from resguard._errors import ConfigError
    from resguard.budget import load

    try:
        budgets = load(config)
    except ConfigError as error:
        sys.stderr.write(f"resguard budget: {error}\n")
        return EXIT_USAGE
    report = budgets.measure()
    if as_json:
        print_json(report.to_dict(), out)
    else:
        if report.config:
            out.write(f"budgets from {report.config}\n")
        out.write(format_report(report) + "\n")
    return 1 if report.over else 0


def run(args: argparse.Namespace, out: TextIO) -> int:
    return cli(args.config, as_json=args.json, out=out)


def add_parser(commands: Commands) -> None:
    budget = commands.add_parser("budget", help="each component's use against its budget")
    budget.add_argument(
        "--config", default=None, help="a TOML file (default: [tool.resguard] in ./pyproject.toml)"
    )
    budget.add_argument("--json", action="store_true", help="print JSON")
    budget.set_defaults(handler=run)
