"""Developer sessions: tests, tests-psutil, lint, typecheck, docs, bench, demo.

``nox -s tests`` is the command README.md gives for running the tests: on Linux it senses
through the linux backend (/proc, cgroups, PSI). ``nox -s tests-psutil`` runs the same
suite with ``RESGUARD_BACKEND=psutil``, the portable backend every other platform uses;
tests about the linux backend skip there with a reason, and their count is printed.
``.ci/run`` runs both with ``RESGUARD_REQUIRE_INTEGRATION=1`` after starting a Docker engine.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "tests-psutil", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = os.environ.get("RESGUARD_NOX_PYTHON")  # None: the interpreter running nox


def _pytest(session: nox.Session, env: dict[str, str]) -> None:
    session.install("-e", ".[test]", "pip")  # pip: the peer suites download cachetools' sdist
    # the slowest tests are named at the end, so that CI's time budget is spent knowingly
    session.run("pytest", "--durations=25", *session.posargs, env=env)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (integration tests skip with a reason unless required)."""
    _pytest(session, env={})


@nox.session(python=PYTHON, name="tests-psutil")
def tests_psutil(session: nox.Session) -> None:
    """Run the test suite on the portable backend, as on macOS (RESGUARD_BACKEND=psutil).

    Tests about the linux backend (real /proc, cgroups, PSI) skip with a reason."""
    _pytest(session, env={"RESGUARD_BACKEND": "psutil"})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) over the package, the tests and the benchmarks, and the
    import-linter contracts of the layers (pyproject.toml)."""
    session.install("ruff>=0.6", "import-linter>=2.1", "-e", ".")
    paths = ("src", "tests", "benchmarks", "noxfile.py", "conftest.py", "docs/conf.py")
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)
    session.run("lint-imports")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and the tests (and the docs' test set-up, apart: two
    files named conftest.py cannot be checked in one run)."""
    session.install("-e", ".[typecheck]")
    session.run("mypy")
    session.run("mypy", "conftest.py")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation with Sphinx; any warning is an error."""
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "-d",
        "docs/_build/doctrees",
        "docs",
        "docs/_build/html",
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmarks (about 5 minutes; names as arguments run parts) and print one
    Markdown table with each target judged met or missed (docs/performance.md is one run)."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The main job: a live view of this machine's pressure with verdicts (Ctrl-C stops)."""
    session.install("-e", ".[cli]")  # as README's command: the live view in colour
    session.run("resguard", "watch", *session.posargs)
