"""``resguard.snapshot`` and ``resguard.profile`` are modules and, as package attributes,
functions: once ``resguard.snapshot()`` ran before the module's first import, the
attribute is the function, and ``import resguard.snapshot as m`` (or ``import
resguard.snapshot._portable as m``) binds the function or fails. The CLI did exactly that
(``resguard snapshot`` in-process: "internal error: AttributeError: 'function' object has
no attribute 'snapshot'"). Code reaches these modules with ``from resguard.snapshot
import ...`` or :func:`importlib.import_module` instead."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support import run_python

ROOT = Path(__file__).resolve().parents[1]
SHADOWED = ("resguard.snapshot", "resguard.profile")  # the package's names for functions too


def _binding_imports(path: Path) -> list[str]:
    """``import resguard.snapshot[.x] as y`` statements in *path*, as 'path:line'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                shadowed = any(
                    alias.name == name or alias.name.startswith(name + ".") for name in SHADOWED
                )
                if shadowed and alias.asname is not None:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_module_of_the_package_or_the_benchmarks_binds_a_shadowed_module_by_import_as() -> None:
    paths = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    assert [hit for path in paths for hit in _binding_imports(path)] == []


@pytest.mark.parametrize("module", SHADOWED)
def test_the_failure_it_guards_against_is_real(module: str) -> None:
    """The pattern fails after the function was used (so the check above is not moot)."""
    name = module.rsplit(".", 1)[1]
    code = (
        f"import resguard\nresguard.{name}\n"
        f"try:\n    import {module} as m\n    print(type(m).__name__)\n"
        f"except ImportError as error:\n    print('ImportError')\n"
    )
    assert run_python(code).strip() == "function"
