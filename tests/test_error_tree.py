"""One closed error tree: every ``raise`` in src/ raises a :class:`resguard.ResguardError`.

The test reads every module's syntax tree, finds each ``raise`` and works out the class of
what it raises: a class named directly, the return annotation of a function or method that
builds the error (``raise _error(...)``), or the handler's classes for
``raise type(error)(...)`` inside ``except ... as error``. A raise passes when that class is
in the tree, when it re-raises an exception object that already exists (a bare ``raise``,
a caught exception, a stored failure handed to waiters), or when one of the rules below
allows it, each with its reason. Anything else fails, named by file, line and class, so a
new ``raise ValueError(...)`` cannot slip in.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import resguard
from resguard import ResguardError
from resguard import _errors as rg_errors

SRC = Path(resguard.__file__).resolve().parent

# Raises the data model, a protocol or a standard library contract requires, by the name of
# the enclosing function (or "<module>"), the class and why.
PROTOCOL: dict[tuple[str, str], str] = {
    ("__getattr__", "AttributeError"): "a module's or object's __getattr__ must raise "
    "AttributeError for a missing name (hasattr, getattr)",
    ("__getitem__", "KeyError"): "a Mapping's __getitem__ raises KeyError for a missing key "
    "(collections.abc.Mapping's get/in/setdefault rely on it)",
    ("__delitem__", "KeyError"): "MutableMapping.__delitem__ raises KeyError for a missing key",
    ("pop", "KeyError"): "MutableMapping.pop without a default raises KeyError",
    ("__missing__", "KeyError"): "a dict subclass's __missing__ raises KeyError for a key it "
    "cannot supply (dict.__getitem__ passes it on)",
    ("popitem", "KeyError"): "MutableMapping.popitem raises KeyError when empty",
    ("__setattr__", "AttributeError"): "an immutable value refuses assignment as frozen attrs "
    "classes and dataclasses do (units.Amount)",
    ("__delattr__", "AttributeError"): "an immutable value refuses deletion as frozen attrs "
    "classes and dataclasses do (units.Amount)",
    ("__next__", "StopIteration"): "the iterator protocol",
    ("__anext__", "StopAsyncIteration"): "the async iterator protocol",
    ("<module>", "SystemExit"): "python -m resguard hands the exit code to the interpreter",
    ("main", "SystemExit"): "the command line's exit code",
    ("error", "SystemExit"): "argparse's error() must exit (the parser's usage error)",
    ("__call__", "SystemExit"): "argparse's --version action exits after printing",
    ("resguard", "UsageError"): "an IPython magic reports bad options as UsageError (one "
    "line, no traceback)",
    ("resguard_top", "UsageError"): "an IPython magic reports bad options as UsageError",
}
# Single sites, read and checked by hand: a private helper's signal that its only callers,
# in the same module, catch. (file, qualified function, class): why it cannot escape.
SITES_ALLOWED: dict[tuple[str, str, str], str] = {
    (
        "src/resguard/_probes/identity.py",
        "parse_stat",
        "ValueError",
    ): "read_stat, its caller, returns None for a malformed stat line (a process gone)",
    (
        "src/resguard/_probes/identity.py",
        "_integer",
        "ValueError",
    ): "called by parse_stat only (see there)",
    (
        "src/resguard/_probes/identity.py",
        "_open_pidfd",
        "ProcessLookupError",
    ): "os.pidfd_open's own 'no such process'; ProcessHandle.open, the only caller, "
    "returns None for it",
    (
        "src/resguard/_probes/macos.py",
        "libc_sysctl",
        "SysctlError",
    ): "the default sysctl reader; read_int, its only caller, turns any exception of a "
    "reader into None and a fault",
    (
        "src/resguard/ollama/_transport.py",
        "BoundedTransport.handle_request",
        "Exception",
    ): "_as_httpx maps httpcore's errors to httpx's (the transport contract, see below) and "
    "passes any other exception on unchanged",
}
# An httpx transport must raise httpx's exception types and an httpcore network backend
# httpcore's (the client maps and relies on them); resguard.ollama's bounded transport and
# backend do, and the module turns each into OllamaError at its boundary
# (tests/test_ollama.py drives a misbehaving server through every call).
HTTPX_TRANSPORT = ("src/resguard/ollama/_transport.py", ("httpx", "httpcore"))
# argparse only turns these into a usage error when a type= function raises them.
ARGPARSE_TYPES = {"ArgumentTypeError"}
# Missing optional dependencies: Python's convention is ImportError, and the message names
# the extra to install (tests/test_public_api.py checks the message).
IMPORT_ERROR_HINT = "pip install"


@dataclass(frozen=True)
class Site:
    path: str
    line: int
    function: str
    klass: str | None  # the class raised, or None when the raise passes without one
    ok: bool
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} in {self.function}: {self.klass} ({self.why})"


# The test doubles' servers raise their HTTP answers inside their own request handlers
# (caught there and sent as a status code), never into a caller of resguard; the NVML
# double raises NVML's own errors into the GPU probe, which catches them.
SERVERS = ("testing/ollama/", "testing/misbehaving.py", "testing/nvml.py")


def _modules() -> Iterator[tuple[Path, str]]:
    for path in sorted(SRC.rglob("*.py")):
        if str(path.relative_to(SRC)).startswith(SERVERS):
            continue
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield path, name


UNIMPORTABLE: dict[str, str] = {}  # module -> why (an optional extra is not installed)


def _load(name: str) -> dict[str, Any] | None:
    """The module's namespace; {} for __main__ (it runs on import), None when it cannot be
    imported here (an extra is missing: its raises cannot be resolved, see below)."""
    if name.endswith("__main__"):
        return {}
    try:
        return vars(importlib.import_module(name))
    except ImportError as error:
        UNIMPORTABLE[name] = str(error)
        return None


class _Scope:
    def __init__(self, node: ast.AST | None, name: str) -> None:
        self.node = node
        self.name = name
        self.caught: dict[str, list[ast.expr]] = {}  # name -> the handler's classes
        self.assigned: dict[str, ast.expr] = {}
        self.imported: dict[str, tuple[str, str]] = {}  # name -> (module, attribute)


class _Finder(ast.NodeVisitor):
    def __init__(self, path: Path, namespace: dict[str, Any], tree: ast.Module) -> None:
        self.rel = str(path.relative_to(SRC.parent.parent))
        self.namespace = namespace
        self.tree = tree
        self.scopes = [_Scope(None, "<module>")]
        self.classes: list[ast.ClassDef] = []
        self.sites: list[Site] = []

    # -- scopes ---------------------------------------------------------------------------

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes.append(node)
        self.generic_visit(node)
        self.classes.pop()

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        scope = _Scope(node, node.name)
        for child in ast.walk(node):
            if isinstance(child, ast.ExceptHandler) and child.name and child.type is not None:
                types = child.type.elts if isinstance(child.type, ast.Tuple) else [child.type]
                scope.caught.setdefault(child.name, []).extend(types)
            elif (
                isinstance(child, ast.Assign)
                and len(child.targets) == 1
                and isinstance(child.targets[0], ast.Name)
            ):
                scope.assigned[child.targets[0].id] = child.value
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                for alias in child.names:
                    scope.imported[alias.asname or alias.name] = (child.module, alias.name)
        self.scopes.append(scope)
        self.generic_visit(node)
        self.scopes.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    # -- resolving ------------------------------------------------------------------------

    def _dotted(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Name):
            for scope in reversed(self.scopes):  # an import inside the function
                if node.id in scope.imported:
                    module, attribute = scope.imported[node.id]
                    try:
                        return getattr(importlib.import_module(module), attribute, None)
                    except ImportError:
                        return None
            if node.id in self.namespace:
                return self.namespace[node.id]
            return getattr(builtins, node.id, None)
        if isinstance(node, ast.Attribute):
            base = self._dotted(node.value)
            return getattr(base, node.attr, None) if base is not None else None
        return None

    def _returned(self, function: Any) -> Any:
        """The class a function that builds an exception says it returns; of ``E | None``
        (an error or none, ``if error is not None: raise error``) it is ``E``: raising
        ``None`` would be a TypeError, so the raise is only reached with an ``E``."""
        function = inspect.unwrap(function)
        try:
            hint = typing.get_type_hints(function).get("return")
        except Exception:
            return None
        args = typing.get_args(hint)
        if type(None) in args:
            rest = [arg for arg in args if arg is not type(None)]
            return rest[0] if len(rest) == 1 else hint
        return hint

    def _method(self, name: str) -> Any:
        """A method *name* of a class of this module (``self._count_refusal``)."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ClassDef):
                owner = self.namespace.get(node.name)
                found = inspect.getattr_static(owner, name, None) if owner is not None else None
                if found is not None:
                    return getattr(found, "__func__", found)
        return None

    def _class_of(self, node: ast.expr) -> tuple[Any, str]:
        """(the class raised or None, how it was found)."""
        if isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Call)
                and isinstance(func.func, ast.Name)
                and func.func.id == "type"
                and func.args
                and isinstance(func.args[0], ast.Name)
            ):
                caught = self._caught(func.args[0].id)
                if caught is None:
                    return None, f"type({func.args[0].id}) of an unknown exception"
                classes = [self._dotted(item) for item in caught]
                bad = [
                    c for c in classes if not (isinstance(c, type) and issubclass(c, ResguardError))
                ]
                return (
                    ResguardError if not bad else bad[0],
                    f"type() of what 'except {', '.join(ast.unparse(c) for c in caught)}' caught",
                )
            target = self._dotted(func)
            if target is None and isinstance(func, ast.Attribute):
                target = self._method(func.attr)
            if isinstance(target, type):
                return target, "named"
            if callable(target):
                returned = self._returned(target)
                return returned, f"returned by {ast.unparse(func)}()"
            return None, f"cannot resolve {ast.unparse(func)}"
        target = self._dotted(node)
        if isinstance(target, type):
            return target, "named"
        return None, "an exception object"

    def _caught(self, name: str) -> list[ast.expr] | None:
        for scope in reversed(self.scopes):
            if name in scope.caught:
                return scope.caught[name]
        return None

    # -- raises ---------------------------------------------------------------------------

    def visit_Raise(self, node: ast.Raise) -> None:
        function = self.scopes[-1].name
        qualname = (
            ".".join([c.name for c in self.classes] + [s.name for s in self.scopes[1:]])
            or "<module>"
        )

        def site(klass: str | None, ok: bool, why: str) -> None:
            self.sites.append(Site(self.rel, node.lineno, qualname, klass, ok, why))

        exc = node.exc
        if exc is None:
            site(None, True, "bare raise: re-raises what is being handled")
            return
        if isinstance(exc, ast.Name) and self._caught(exc.id) is not None:
            site(None, True, f"re-raises the caught {exc.id}")
            return
        if (
            isinstance(exc, ast.Name)
            and exc.id in self.scopes[-1].assigned
            and isinstance(self.scopes[-1].assigned[exc.id], ast.Call)
        ):
            exc = self.scopes[-1].assigned[exc.id]  # refusal = self._refuse(...); raise refusal
        klass, how = self._class_of(exc)
        if klass is None and how == "an exception object":
            site(None, True, f"re-raises a stored exception object ({ast.unparse(exc)})")
            return
        if not isinstance(klass, type):
            site(str(klass), False, how)
            return
        name = klass.__name__
        if issubclass(klass, ResguardError):
            site(name, True, how)
            return
        reason = PROTOCOL.get((function, name)) or SITES_ALLOWED.get((self.rel, qualname, name))
        if (
            reason is None
            and self.rel == HTTPX_TRANSPORT[0]
            and any(base.__module__.split(".")[0] in HTTPX_TRANSPORT[1] for base in klass.__mro__)
        ):
            reason = (
                "an httpx/httpcore error inside resguard.ollama's transport, which the "
                "module turns into OllamaError"
            )
        if reason is None and name in ARGPARSE_TYPES:
            reason = "argparse turns it into a usage error (a type= function)"
        if reason is None and name == "NotImplementedError" and self._abstract():
            reason = "a Protocol's or abstract method's body"
        if reason is None and name == "ImportError" and self._names_the_extra(exc):
            reason = "a missing optional dependency, naming the extra to install"
        site(name, reason is not None, reason or how)

    def _names_the_extra(self, exc: ast.expr) -> bool:
        """The message says ``pip install ...``, literally or through a module constant."""
        if IMPORT_ERROR_HINT in ast.unparse(exc):
            return True
        return any(
            isinstance(node, ast.Name) and IMPORT_ERROR_HINT in str(self.namespace.get(node.id, ""))
            for node in ast.walk(exc)
        )

    def _abstract(self) -> bool:
        if not self.classes:
            return False
        bases = {ast.unparse(base) for base in self.classes[-1].bases}
        return bool(bases & {"Protocol", "typing.Protocol", "ABC", "abc.ABC"})


def _sites() -> list[Site]:
    sites = []
    for path, name in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        namespace = _load(name)
        if namespace is None:
            continue
        finder = _Finder(path, namespace, tree)
        finder.visit(tree)
        sites.extend(finder.sites)
    return sites


SITES = _sites()


def test_the_walk_finds_the_raises_it_must_judge() -> None:
    """The walk is not vacuous: it sees raises of each kind in the tree."""
    by_why = " ".join(site.why for site in SITES)
    assert len(SITES) > 100
    assert "returned by _error()" in by_why  # budget's ConfigError builder
    assert "bare raise" in by_why
    assert any(site.klass == "InvalidValue" for site in SITES)
    assert any(site.klass == "AttributeError" and site.ok for site in SITES)


def _walk(code: str, namespace: dict[str, Any]) -> list[Site]:
    tree = ast.parse(code)
    finder = _Finder(SRC / "_probe_for_the_error_tree_test.py", namespace, tree)
    finder.visit(tree)
    return finder.sites


def _builds_value_error() -> ValueError:
    return ValueError("x")


def _builds_invalid_value() -> rg_errors.InvalidValue:
    return rg_errors.InvalidValue("x")


def _maybe_value_error() -> ValueError | None:
    return None


def _maybe_invalid_value() -> rg_errors.InvalidValue | None:
    return None


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("def f(v):\n    raise ValueError(f'{v!r} is empty')\n", False),
        ("def f(v):\n    raise ValueError\n", False),
        (
            "def f(v):\n    try:\n        int(v)\n    except ValueError as error:\n"
            "        raise type(error)(f'{v!r}') from None\n",
            False,
        ),
        (
            "def f(v):\n    try:\n        int(v)\n    except InvalidValue as error:\n"
            "        raise type(error)(f'{v!r}') from None\n",
            True,
        ),
        ("def f(v):\n    raise _builds_value_error()\n", False),
        ("def f(v):\n    raise _builds_invalid_value()\n", True),
        ("def f(v):\n    refusal = _builds_value_error()\n    raise refusal\n", False),
        (
            "def f(v):\n    error = _maybe_invalid_value()\n    if error:\n        raise error\n",
            True,
        ),
        (
            "def f(v):\n    error = _maybe_value_error()\n    if error:\n        raise error\n",
            False,
        ),
        ("def f(v):\n    raise InvalidValue(f'{v!r}')\n", True),
        ("def f(v):\n    try:\n        int(v)\n    except ValueError:\n        raise\n", True),
        ("class C:\n    def __getattr__(self, name):\n        raise AttributeError(name)\n", True),
        ("class C:\n    def get(self, name):\n        raise AttributeError(name)\n", False),
        ("class C:\n    def __getitem__(self, key):\n        raise KeyError(key)\n", True),
    ],
)
def test_the_walk_judges_each_kind_of_raise(code: str, ok: bool) -> None:
    namespace = {
        "InvalidValue": rg_errors.InvalidValue,
        "_builds_value_error": _builds_value_error,
        "_builds_invalid_value": _builds_invalid_value,
        "_maybe_value_error": _maybe_value_error,
        "_maybe_invalid_value": _maybe_invalid_value,
    }
    (site,) = _walk(code, namespace)
    assert site.ok is ok, site


def test_every_single_site_allowed_still_exists() -> None:
    """An entry whose raise was removed or moved to another function must go too."""
    found = {(site.path, site.function, site.klass) for site in SITES}
    assert set(SITES_ALLOWED) - found == set()


def test_every_module_was_read() -> None:
    from plugins.integration import unavailable

    if UNIMPORTABLE:
        unavailable(f"modules not checked, their extras are missing: {UNIMPORTABLE}")


def test_every_raise_in_src_is_in_the_error_tree_or_allowed_with_a_reason() -> None:
    bad = [str(site) for site in SITES if not site.ok]
    assert bad == [], "raises outside the ResguardError tree:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "name",
    sorted(
        name
        for name in dir(resguard._errors)
        if isinstance(getattr(resguard._errors, name), type)
        and issubclass(getattr(resguard._errors, name), BaseException)
    ),
)
def test_every_error_class_is_a_resguard_error(name: str) -> None:
    klass = getattr(resguard._errors, name)
    assert issubclass(klass, ResguardError), name


def test_a_refusal_survives_pickling_so_it_can_cross_a_process_pool() -> None:
    import pickle

    refusal = rg_errors.ResourceExhausted(
        "no room", reason="memory", retry_after=2.5, numbers={"a": 1}
    )
    copy = pickle.loads(pickle.dumps(refusal))
    assert type(copy) is rg_errors.ResourceExhausted
    assert (str(copy), copy.reason, copy.retry_after, copy.numbers) == (
        "no room",
        "memory",
        2.5,
        {"a": 1},
    )
    answered = rg_errors.OllamaError("bad gateway", status_code=502)
    assert pickle.loads(pickle.dumps(answered)).status_code == 502
