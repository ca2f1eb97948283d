"""The shape of the code, checked so that it does not drift back (issue 12).

Sizes: no class over 400 lines, no module over 700, no function over 60 in src/. Privacy:
a package's private modules and a module's private names are used only inside it (the base
packages ``_errors``, ``_modules`` and ``_probes`` are shared by all). Tests wait on time
through an injected clock: at most 10 real sleeps are left in tests/. The layers
themselves are checked by import-linter (``nox -s lint``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "resguard"
SHARED_PRIVATE = {"_errors", "_modules", "_probes"}
MAX_CLASS_LINES, MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 700, 60
MAX_SLEEPS_IN_TESTS = 3  # real waits of the tests' own; a child's program in a string is none


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _definitions(tree: ast.AST) -> Iterator[tuple[str, str, int]]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            assert node.end_lineno is not None
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            yield kind, node.name, node.end_lineno - start + 1


def test_no_class_module_or_function_in_src_is_over_its_size_limit() -> None:
    too_long = []
    for path in _sources():
        text = path.read_text()
        where = path.relative_to(ROOT)
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            too_long.append(f"module {where}: {lines} lines (limit {MAX_MODULE_LINES})")
        for kind, name, lines in _definitions(ast.parse(text)):
            limit = MAX_CLASS_LINES if kind == "class" else MAX_FUNCTION_LINES
            if lines > limit:
                too_long.append(f"{kind} {where}:{name}: {lines} lines (limit {limit})")
    assert too_long == []


def _owner(module: str) -> str:
    """The top-level part of resguard that *module* belongs to (``resguard.cache``)."""
    return ".".join(module.split(".")[:2])


def _private_part(module: str) -> str | None:
    """The first private part of a dotted module path below its owner, if any."""
    for part in module.split(".")[2:]:
        if part.startswith("_"):
            return part
    return None


def _imports(path: Path) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, target] if target else base)
            yield node.lineno, target, tuple(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()


def test_private_modules_and_names_are_used_only_inside_their_owner() -> None:
    leaks = []
    for path in _sources():
        module = _module_name(path)
        for line, target, names in _imports(path):
            if not target.startswith("resguard.") or _owner(target) == _owner(module):
                continue
            if _owner(target).split(".")[1] in SHARED_PRIVATE:
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            if (part := _private_part(target)) is not None:
                leaks.append(f"{where} imports the private module {target} ({part})")
            leaks.extend(
                f"{where} imports the private name {name} from {target}"
                for name in names
                if name.startswith("_") and not name.startswith("__")
            )
    assert leaks == []


def _sleep_calls(tree: ast.AST) -> list[int]:
    """Lines of the ``time.sleep(...)`` calls the tests themselves make (a child process's
    program in a string, ``"import time; time.sleep(120)"``, is no wait of the test's)."""
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "sleep"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "time"
    ]


def test_tests_wait_on_an_injected_clock_not_on_real_sleeps() -> None:
    sleeps = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if path.name != "test_layout.py":
            tree = ast.parse(path.read_text())
            sleeps += [f"{path.relative_to(ROOT)}:{line}" for line in _sleep_calls(tree)]
    assert len(sleeps) <= MAX_SLEEPS_IN_TESTS, sleeps


def test_a_childs_sleep_in_a_string_is_not_counted_as_the_tests_wait() -> None:
    tree = ast.parse('run("import time; time.sleep(120)")\ntime.sleep(0.1)\n')
    assert _sleep_calls(tree) == [2]


@pytest.mark.parametrize("path", _sources(), ids=lambda path: str(path.relative_to(SRC)))
def test_every_source_file_has_a_docstring_saying_what_it_is_for(path: Path) -> None:
    tree = ast.parse(path.read_text())
    if path.name == "__init__.py" and not tree.body:
        return
    assert ast.get_docstring(tree), f"{path.relative_to(ROOT)} has no module docstring"
