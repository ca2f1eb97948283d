"""The suite on either sensing backend: tests marked ``linux_backend`` are about the linux
backend reading the real machine (real /proc numbers, real cgroups, PSI), so a run on the
portable backend (``RESGUARD_BACKEND=psutil``, what ``nox -s tests-psutil`` does) skips
them with a reason and counts them at the end.

The psutil run is what a Mac runs, so it also skips what needs a Linux memory cgroup (the
``memory_cgroup`` fixture): the portable backend never reads cgroups, and the cgroup
machinery itself (``resguard run``'s budget, a replica squeezed in a cgroup) was tested by
the linux run, on the same kernel, minutes before.

These are plain skips, not integration skips: ``RESGUARD_REQUIRE_INTEGRATION=1`` fails
only what :func:`plugins.integration.unavailable` skips, so the psutil run in CI passes
with them skipped.
"""

from __future__ import annotations

import os

import pytest

from resguard._probes.backend import ENV_VAR, default_backend

MARKER = "linux_backend"
ABOUT = "about the linux backend (real /proc, cgroups, PSI)"
CGROUP_FIXTURE = "memory_cgroup"
NEEDS_CGROUP = "needs a Linux memory cgroup, which a portable backend's platform does not have"


def why() -> str:
    """What this run measures with, as the skip reason and the count say it: the variable
    CI sets, or (on macOS, Windows) the platform's own backend."""
    if os.environ.get(ENV_VAR, "").strip().lower() == "psutil":
        return f"{ENV_VAR}=psutil"
    return "the psutil backend, this platform's own"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests about the linux backend when the run's backend is psutil."""
    if default_backend() == "linux":
        return
    skip = pytest.mark.skip(reason=f"{ABOUT}; this run uses {why()}")
    skip_cgroup = pytest.mark.skip(reason=f"{NEEDS_CGROUP}; this run uses {why()}")
    for item in items:
        if item.get_closest_marker(MARKER) is not None:
            item.add_marker(skip)
        elif CGROUP_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(skip_cgroup)


def skipped_for_backend(reporter: pytest.TerminalReporter, about: str = ABOUT) -> int:
    """How many tests of this run skipped for *about* (by default: about the linux
    backend)."""
    count = 0
    for report in reporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        if isinstance(longrepr, tuple) and len(longrepr) == 3 and about in str(longrepr[2]):
            count += 1
    return count


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many tests the psutil run skipped (none are hidden in the ``-ra`` list)."""
    if default_backend() == "linux":
        return
    count = skipped_for_backend(terminalreporter)
    noun = "test" if count == 1 else "tests"
    terminalreporter.write_line(f"{count} {noun} skipped: about the linux backend ({why()})")
    count = skipped_for_backend(terminalreporter, NEEDS_CGROUP)
    noun = "test" if count == 1 else "tests"
    terminalreporter.write_line(
        f"{count} {noun} skipped: they need a Linux memory cgroup ({why()})"
    )
