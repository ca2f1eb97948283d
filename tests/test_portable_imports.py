"""Nothing Linux-only at import: resguard imports, measures and guards on a Python that
lacks ``resource``, ``fcntl``, ``pwd``, ``grp``, ``termios``, ``select.poll``,
``os.eventfd``, ``os.sched_getaffinity``, ``os.pidfd_open``, ``time.CLOCK_BOOTTIME`` and
friends (faked in a child interpreter, before resguard is imported), and no module uses
them at import time without a guard (an AST scan, so that it cannot drift back).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src" / "resguard"

UNIX_MODULES = frozenset({"resource", "fcntl", "pwd", "grp", "termios"})
"""Modules that do not exist on every platform Python runs on (Windows lacks them all)."""

UNIX_NAMES = {
    "os": {
        "eventfd",
        "sched_getaffinity",
        "register_at_fork",
        "sysconf",
        "getuid",
        "geteuid",
        "pidfd_open",
        "getloadavg",
        "pread",
        "O_CLOEXEC",
    },
    "select": {"poll", "epoll"},
    "time": {"CLOCK_BOOTTIME"},
    "signal": {"SIGSTOP", "SIGCONT", "SIGKILL", "pidfd_send_signal"},
}
"""Attributes of always-present modules that some platforms lack."""

LINUX_ONLY_NAMES = {
    "os": {"eventfd", "sched_getaffinity", "pidfd_open"},
    "select": {"epoll"},
    "time": {"CLOCK_BOOTTIME"},
    "signal": {"pidfd_send_signal"},
}
"""What macOS lacks of the above (it has rlimits, pwd, poll, getuid, SIGKILL)."""

# The child interpreter: hide the names above, optionally pretend to be a Mac, then import
# every module of resguard and use the core of it. Each step prints one JSON line, so a
# failure says which step broke.
CHILD = r"""
import importlib, importlib.abc, json, os, sys, time, select, signal

BLOCKED = set(json.loads(sys.argv[1]))
NAMES = json.loads(sys.argv[2])
PLATFORM = sys.argv[3]
TESTS = sys.argv[4]

# Dependencies and the extras' packages are imported first, as they are: their own
# platform code (psutil's C module, urllib's macOS proxy reader) is not what is tested.
import psutil, urllib.request
for extra in ("docker", "ollama", "httpx", "prometheus_client", "IPython.core.magic",
              "IPython.display", "anyio"):
    try:
        importlib.import_module(extra)
    except ImportError:
        pass

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED:
            raise ImportError(f"No module named {name!r} (hidden by the test)", name=name)
        return None

for name in BLOCKED:
    sys.modules.pop(name, None)
sys.meta_path.insert(0, Absent())
for module, names in NAMES.items():
    for name in names:
        if hasattr(sys.modules[module], name):
            delattr(sys.modules[module], name)
if PLATFORM:
    sys.platform = PLATFORM

def step(name, **facts):
    print(json.dumps({"step": name, **facts}), flush=True)

import logging, io
log = io.StringIO()
handler = logging.StreamHandler(log)
logging.getLogger("resguard").addHandler(handler)
logging.getLogger("resguard").setLevel(logging.INFO)

import resguard
step("import resguard")
for name in resguard.__all__:
    getattr(resguard, name)
step("resguard.__all__", count=len(resguard.__all__))

import pkgutil
imported = []
for info in pkgutil.walk_packages(resguard.__path__, "resguard."):
    if info.name.rsplit(".", 1)[-1] == "__main__":
        continue  # running it is the command line, not an import
    importlib.import_module(info.name)
    imported.append(info.name)
step("every module", modules=imported)

from resguard._probes.backend import default_backend
step("backend", backend=default_backend())

snap = resguard.snapshot()
step("snapshot", total=snap.memory.total, host=psutil.virtual_memory().total,
     available=snap.memory.available, faults=[str(f) for f in snap.faults])

rows = resguard.top_processes(5)
step("top_processes", pids=[row.pid for row in rows])

guard = resguard.Guard(memory="90%", reserve="1MiB")
with guard:
    pass
step("guard admits", admitted=guard.stats().admitted if hasattr(guard, "stats") else None)

verdict = resguard.presets.laptop().evaluate(snap)
step("laptop preset", level=str(verdict.level))

from resguard.cli import main
out = io.StringIO()
code = main(["snapshot", "--json"], out)
step("cli snapshot --json", code=code, total=json.loads(out.getvalue())["memory"]["total"])
out = io.StringIO()
code = main(["top", "-n", "3", "--json", "--interval", "0"], out)
step("cli top --json", code=code, rows=len(json.loads(out.getvalue())))
out = io.StringIO()
code = main(["watch", "--once", "--json"], out)
step("cli watch --once --json", code=code, level=json.loads(out.getvalue()).get("level"))

with resguard.profile(interval="10ms") as prof:
    bytearray(8 * 2**20)
step("profile", peak=prof.peak_rss)

try:
    limit = resguard.limit_self("2GiB")  # (where it works, this child lives under it)
except resguard.InvalidState as error:
    step("limit_self", refused=str(error), limit=None)
else:
    step("limit_self", refused=None, limit=limit)

sys.path.insert(0, TESTS)
from support import wait_until

import subprocess
marker = f"resguard-portable-{os.getpid()}"
sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
stopper = resguard.reclaim.ProcessStopper([marker], enabled=True, dry_run=False, grace="2s")
wait_until(lambda: any(c.pid == sleeper.pid for c in stopper.candidates()), what="the sleeper")
candidate = next(c for c in stopper.candidates() if c.pid == sleeper.pid)
action = stopper.stop(candidate)
exited = sleeper.wait(10) if action.done else sleeper.poll()
if exited is None:
    sleeper.terminate()  # (not kill(): signal.SIGKILL may be hidden here)
    sleeper.wait(10)
step("stopper", protected=candidate.protected, signal=action.signal, done=action.done,
     reason=action.reason, exited=exited)

for _ in range(2):
    with resguard.Monitor("20ms", slow_interval="50ms", reclaim=False) as monitor:
        wait_until(lambda: monitor.ticks >= 3, what="three ticks of the fast loop")
step("monitor", log=log.getvalue())
"""


def _run_child(platform: str, backend: str | None) -> dict[str, dict[str, object]]:
    """Run the child: as a Python with none of the Unix-only names (``platform=""``, what
    Windows lacks, on Linux's stdlib) or as macOS (``"darwin"``: only Linux's own missing)."""
    env = {key: value for key, value in os.environ.items() if key != "RESGUARD_BACKEND"}
    if backend is not None:
        env["RESGUARD_BACKEND"] = backend
    darwin = platform == "darwin"
    hidden = LINUX_ONLY_NAMES if darwin else UNIX_NAMES
    names = {module: sorted(found) for module, found in hidden.items()}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            json.dumps([] if darwin else sorted(UNIX_MODULES)),
            json.dumps(names),
            platform,
            str(TESTS),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    steps = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            fact = json.loads(line)
            steps[str(fact.pop("step"))] = fact
    assert done.returncode == 0, (
        f"the child stopped after {list(steps)[-1:] or 'nothing'}:\n{done.stderr[-4000:]}"
    )
    return steps


@pytest.mark.parametrize(
    ("platform", "backend"),
    [("", "psutil"), ("darwin", None)],
    ids=["without-any-unix-only-name", "pretending-darwin"],
)
def test_resguard_imports_measures_and_guards_without_the_unix_only_names(
    platform: str, backend: str | None
) -> None:
    steps = _run_child(platform, backend)
    modules = steps["every module"]["modules"]
    assert isinstance(modules, list)
    for expected in (
        "resguard.cache",
        "resguard.guard",
        "resguard.rules",
        "resguard.monitor",
        "resguard.snapshot",
        "resguard.processes",
        "resguard.reclaim",
        "resguard.models",
        "resguard.budget",
        "resguard.presets",
        "resguard.units",
        "resguard.testing",
        "resguard.cli",
        "resguard.asgi",
        "resguard.prometheus",
        "resguard.ollama",
        "resguard.docker",
        "resguard.notebook",
    ):
        assert expected in modules
    assert steps["backend"]["backend"] == "psutil"
    import psutil

    snap = steps["snapshot"]
    assert snap["total"] == psutil.virtual_memory().total
    assert isinstance(snap["available"], int)
    assert snap["available"] > 0
    pids = steps["top_processes"]["pids"]
    assert isinstance(pids, list)
    assert len(pids) == 5
    assert steps["guard admits"]["admitted"] == 1
    assert "laptop preset" in steps
    assert steps["cli snapshot --json"]["code"] == 0
    assert steps["cli snapshot --json"]["total"] == psutil.virtual_memory().total
    if platform == "darwin":  # the macOS reader ran and failed as a fault, not a crash
        faults = snap["faults"]
        assert isinstance(faults, list)
        assert any("kern.memorystatus_vm_pressure_level" in fault for fault in faults), faults
    assert steps["cli top --json"] == {"code": 0, "rows": 3}
    assert steps["cli watch --once --json"]["code"] in (0, 1)  # 1: the verdict is not OK
    stopped = steps["stopper"]
    if platform == "darwin":  # this user's own process, opted in by pattern: stopped
        assert stopped["protected"] is None, stopped
        assert stopped["done"] is True, stopped
        assert stopped["signal"] == "SIGTERM", stopped
        assert stopped["exited"] is not None, stopped
        assert steps["limit_self"] == {"refused": None, "limit": 2 * 2**30}
    else:  # no getuid: whose process it is cannot be told, so it is never signalled
        assert stopped["protected"] is not None, stopped
        assert stopped["signal"] == "none", stopped
        assert stopped["exited"] is None, stopped
        refused = steps["limit_self"]["refused"]
        assert isinstance(refused, str)
        assert "not available on this platform" in refused
    log = steps["monitor"]["log"]
    assert isinstance(log, str)
    # two monitor starts, one line: said once per process, not per start
    assert (
        log.count("kernel memory events (PSI triggers, cgroup notifications) are not available")
        == 1
    ), log


# -- the AST scan ---------------------------------------------------------------------


def _catches_absence(handler: ast.ExceptHandler) -> bool:
    """Whether an ``except`` clause catches a missing module or attribute."""
    caught = handler.type
    if caught is None:
        return True
    names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
    return any(
        isinstance(name, ast.Name)
        and name.id in {"ImportError", "ModuleNotFoundError", "AttributeError", "Exception"}
        for name in names
    )


def _is_guard_test(test: ast.expr) -> bool:
    """An ``if`` that asks whether a name exists (``hasattr``/``getattr``) or which
    platform this is (``sys.platform``, ``os.name``), or ``if TYPE_CHECKING:`` (never run)."""
    if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
        return True
    for node in ast.walk(test):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"hasattr", "getattr"}
        ):
            return True
        if isinstance(node, ast.Attribute) and (
            (
                node.attr == "platform"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            )
            or (node.attr == "name" and isinstance(node.value, ast.Name) and node.value.id == "os")
        ):
            return True
    return False


def _import_time_nodes(body: list[ast.stmt], guarded: bool) -> Iterator[tuple[ast.AST, bool]]:
    """The nodes a module's import runs (function bodies do not run; their defaults and
    decorators do), each with whether a guard surrounds it."""
    for statement in body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in [*statement.decorator_list, *statement.args.defaults]:
                yield from ((sub, guarded) for sub in ast.walk(node))
            yield from (
                (sub, guarded)
                for default in statement.args.kw_defaults
                if default is not None
                for sub in ast.walk(default)
            )
        elif isinstance(statement, ast.ClassDef):
            for node in [*statement.decorator_list, *statement.bases]:
                yield from ((sub, guarded) for sub in ast.walk(node))
            yield from _import_time_nodes(statement.body, guarded)
        elif isinstance(statement, ast.If):
            inner = guarded or _is_guard_test(statement.test)
            yield from ((sub, guarded) for sub in ast.walk(statement.test))
            yield from _import_time_nodes(statement.body, inner)
            yield from _import_time_nodes(statement.orelse, inner)
        elif isinstance(statement, ast.Try):
            caught = any(_catches_absence(handler) for handler in statement.handlers)
            yield from _import_time_nodes(statement.body, guarded or caught)
            for handler in statement.handlers:
                yield from _import_time_nodes(handler.body, guarded)
            yield from _import_time_nodes(statement.orelse, guarded or caught)
            yield from _import_time_nodes(statement.finalbody, guarded)
        else:
            yield from _expression_nodes(statement, guarded)


def _expression_nodes(statement: ast.stmt, guarded: bool) -> Iterator[tuple[ast.AST, bool]]:
    """A plain statement's nodes; the branches of ``x if hasattr(...) else y`` are guarded
    and lambdas do not run."""
    stack: list[tuple[ast.AST, bool]] = [(statement, guarded)]
    while stack:
        node, inside = stack.pop()
        if isinstance(node, ast.Lambda):
            continue
        yield node, inside
        if isinstance(node, ast.IfExp) and _is_guard_test(node.test):
            stack.extend((child, True) for child in (node.body, node.orelse))
            stack.append((node.test, inside))
            continue
        stack.extend((child, inside) for child in ast.iter_child_nodes(node))


def unguarded_platform_names(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` for each platform-specific module or name a module's import uses
    without a guard (a ``try ... except ImportError`` or an ``if hasattr(...)``)."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node, guarded in _import_time_nodes(tree.body, False):
        if guarded:
            continue
        if isinstance(node, ast.Import):
            found += [
                (node.lineno, f"import {alias.name}")
                for alias in node.names
                if alias.name.split(".")[0] in UNIX_MODULES
            ]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            root = node.module.split(".")[0]
            if root in UNIX_MODULES:
                found.append((node.lineno, f"from {node.module} import ..."))
            for alias in node.names:
                if alias.name in UNIX_NAMES.get(node.module, ()):
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.attr in UNIX_NAMES.get(node.value.id, ())
        ):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return sorted(found)


def test_the_scan_finds_what_it_looks_for() -> None:
    source = (
        "import os, resource\n"
        "import signal\n"
        "from select import poll\n"
        "KILL = signal.SIGKILL\n"
        "def f(n=os.sysconf('SC_CLK_TCK')):\n"
        "    return os.getuid()\n"  # a function body runs later, not at import
        "try:\n"
        "    import fcntl\n"
        "except ImportError:\n"
        "    fcntl = None\n"
        "if hasattr(os, 'register_at_fork'):\n"
        "    os.register_at_fork(after_in_child=f)\n"
        "PAGE = os.sysconf('SC_PAGE_SIZE') if hasattr(os, 'sysconf') else 4096\n"
        "BOOT = getattr(time, 'CLOCK_BOOTTIME', None)\n"
        "if TYPE_CHECKING:\n"
        "    import pwd\n"
        "class Stopper:\n"
        "    SIGNAL = signal.SIGSTOP\n"
    )
    assert unguarded_platform_names(source) == [
        (1, "import resource"),
        (3, "from select import poll"),
        (4, "signal.SIGKILL"),
        (5, "os.sysconf"),
        (18, "signal.SIGSTOP"),
    ]


def test_no_module_uses_a_platform_specific_name_at_import_without_a_guard() -> None:
    offenders = [
        f"{path.relative_to(SRC.parent)}:{line}: {what}"
        for path in sorted(SRC.rglob("*.py"))
        for line, what in unguarded_platform_names(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, "used at import without a guard:\n" + "\n".join(offenders)


@pytest.mark.parametrize("backend", [None, "psutil", "linux"])
def test_import_resguard_stays_cheap_on_every_backend(backend: str | None) -> None:
    env = {key: value for key, value in os.environ.items() if key != "RESGUARD_BACKEND"}
    if backend is not None:
        env["RESGUARD_BACKEND"] = backend
    code = (
        "import sys, json, resguard\n"
        "print(json.dumps(sorted(m for m in ('psutil', 'resource', 'fcntl', 'select', "
        "'resguard.snapshot', 'resguard._probes.backend') if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
