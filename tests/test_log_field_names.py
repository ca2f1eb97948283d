"""The structured log fields: each name resguard accepts is one it writes and one
docs/logging.md's table lists (an unused or unlisted name is a field no dashboard finds)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from resguard._modules.log import FIELD_NAMES

ROOT = Path(__file__).resolve().parent.parent
#: set by verdict_fields() by their prefixed names, not through fields(**values)
VERDICT_FIELDS = {"level", "rule", "rules", "culprits"}


def _written() -> set[str]:
    """The field names src passes to ``fields(event, name=...)``."""
    names: set[str] = set()
    for path in (ROOT / "src" / "resguard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "fields":
                names.update(keyword.arg for keyword in node.keywords if keyword.arg)
    return names


def _documented() -> set[str]:
    """The field names in the Fields column of docs/logging.md's table of what is logged."""
    text = (ROOT / "docs" / "logging.md").read_text()
    table = text.split("## What is logged, at which level", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in table.splitlines():
        if row.startswith("|") and not row.startswith("| ---"):
            cells = row.strip("|").split("|")
            names.update(re.findall(r"`([a-z_]+)", cells[-1]))
    return names


def test_every_field_name_is_written_and_documented() -> None:
    names = FIELD_NAMES - {"event"}
    assert names - (_written() | VERDICT_FIELDS) == set(), "accepted but never written"
    assert names - _documented() == set(), "accepted but not in docs/logging.md"
    assert _written() - FIELD_NAMES == set()


def test_a_field_holding_a_quantity_names_its_unit() -> None:
    quantities = {name for name in FIELD_NAMES if "second" in name or "byte" in name}
    assert all(name.endswith(("_s", "_bytes")) for name in quantities), quantities
