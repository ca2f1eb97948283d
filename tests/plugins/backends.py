"""The suite on either sensing backend: tests marked ``linux_backend`` are about the linux
backend reading the real machine (real /proc numbers, real cgroups, PSI), so a run on the
portable backend (``RESGUARD_BACKEND=psutil``, what ``nox -s tests-psutil`` does) skips
them with a reason and counts them at the end.

These are plain skips, not integration skips: ``RESGUARD_REQUIRE_INTEGRATION=1`` fails
only what :func:`plugins.integration.unavailable` skips, so the psutil run in CI passes
with them skipped.
"""

from __future__ import annotations

import pytest

from resguard._probes.backend import default_backend

MARKER = "linux_backend"
REASON = "about the linux backend (real /proc, cgroups, PSI); this run uses RESGUARD_BACKEND=psutil"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests about the linux backend when the run's backend is psutil."""
    if default_backend() == "linux":
        return
    skip = pytest.mark.skip(reason=REASON)
    for item in items:
        if item.get_closest_marker(MARKER) is not None:
            item.add_marker(skip)


def skipped_for_backend(reporter: pytest.TerminalReporter) -> int:
    """How many tests of this run skipped because they are about the linux backend."""
    count = 0
    for report in reporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        if isinstance(longrepr, tuple) and len(longrepr) == 3 and REASON in str(longrepr[2]):
            count += 1
    return count


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many tests the psutil run skipped (none are hidden in the ``-ra`` list)."""
    if default_backend() == "linux":
        return
    count = skipped_for_backend(terminalreporter)
    noun = "test" if count == 1 else "tests"
    terminalreporter.write_line(
        f"{count} {noun} skipped: about the linux backend (RESGUARD_BACKEND=psutil)"
    )
