"""Other projects' own test suites, obtained at test time and run against resguard.

resguard claims compatibility with ``cachetools.LRUCache`` and ``functools.lru_cache``; the
strongest evidence is those projects' own tests. Their code is never committed here:

- cachetools' tests ship in its sdist on PyPI. :func:`cachetools_tests` downloads the sdist
  of the *installed* version once with pip (so the tests match the API they test), keeps its
  ``tests/`` folder under ``$RESGUARD_PEER_CACHE`` (default: the system temp dir) and imports
  it as a package of its own.
- CPython's ``test.test_functools`` comes with the interpreter (some distributions strip it).

Either function returns the module, or a string saying why it is unavailable; the test module
then calls :func:`plugins.integration.unavailable` with it (a skip on a laptop, a failure
where ``RESGUARD_REQUIRE_INTEGRATION=1``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

DOWNLOAD_TIMEOUT_S = 180.0
"""The longest one pip download may take (it also builds the sdist's metadata)."""

PACKAGE = "cachetools_peer_tests"
"""The name the downloaded ``tests`` folder is imported under (not ``tests``: ours)."""


def _cache_root() -> Path:
    return Path(os.environ.get("RESGUARD_PEER_CACHE") or tempfile.gettempdir()) / (
        "resguard-peer-suites"
    )


def _download_sdist(requirement: str, into: Path) -> Path | str:
    """pip-download the sdist of *requirement* into *into*; its path or why it failed."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--retries",
        "0",
        "--timeout",
        "20",
        "--disable-pip-version-check",
        "--dest",
        str(into),
        requirement,
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not download {requirement} with pip ({exc})"
    archives = sorted(into.glob("*.tar.gz"))
    if done.returncode != 0 or not archives:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"could not download {requirement} with pip (offline?): {said}"
    return archives[0]


def _extract_tests(archive: Path, into: Path) -> str | None:
    """Extract the archive's top-level ``tests/`` files into *into*; None or what failed."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            if len(parts) < 3 or parts[1] != "tests" or not member.isfile():
                continue
            if any(part in ("..", "") for part in parts) or member.name.startswith("/"):
                return f"refusing an unsafe path in {archive.name}: {member.name!r}"
            target = into.joinpath(*parts[2:])
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                continue
            with source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
    if not (into / "__init__.py").is_file():
        return f"{archive.name} has no tests/__init__.py (cachetools moved its tests?)"
    return None


def cachetools_tests() -> types.ModuleType | str:
    """cachetools' own ``tests`` package for the installed version, or why there is none."""
    try:
        import cachetools
    except ImportError:
        return "cachetools is not installed"
    version = cachetools.__version__
    folder = _cache_root() / f"cachetools-{version}" / "tests"
    if not (folder / "__init__.py").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
            archive = _download_sdist(f"cachetools=={version}", Path(scratch))
            if isinstance(archive, str):
                return archive
            staged = Path(scratch) / "tests"
            problem = _extract_tests(archive, staged)
            if problem is not None:
                return problem
            try:
                staged.rename(folder)  # atomic: a half-extracted folder is never used
            except OSError:
                if not (folder / "__init__.py").is_file():  # not a concurrent run's win
                    raise
    return _import_package(PACKAGE, folder)


def _import_package(name: str, folder: Path) -> types.ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def cachetools_test_module(name: str) -> types.ModuleType | str:
    """One module of cachetools' suite (e.g. ``"test_lru"``), or why it is unavailable."""
    package = cachetools_tests()
    if isinstance(package, str):
        return package
    try:
        return importlib.import_module(f"{package.__name__}.{name}")
    except ImportError as exc:
        return f"cachetools' suite has no importable {name} ({exc})"


def functools_tests() -> types.ModuleType | str:
    """CPython's ``test.test_functools``, or why it cannot be imported."""
    try:
        return importlib.import_module("test.test_functools")
    except ImportError as exc:
        return f"CPython's test package is not installed with this interpreter ({exc})"


def expected_difference(test: Callable[..., None], reason: str, raises: type[BaseException]) -> Any:
    """A peer's *test*, expected to fail with *raises* where resguard differs on purpose
    for *reason* (strict: a difference that starts passing fails the run)."""

    @pytest.mark.xfail(reason=reason, raises=raises, strict=True)
    @functools.wraps(test)
    def expected_to_differ(self: Any) -> None:
        test(self)

    return expected_to_differ
