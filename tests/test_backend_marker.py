"""The suite's psutil run (``nox -s tests-psutil``): tests marked ``linux_backend`` skip
there with the reason, CI's ``RESGUARD_REQUIRE_INTEGRATION=1`` does not turn those skips
into failures, and the count is printed; on the linux backend they run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

EXAMPLE = """
import pytest

@pytest.mark.linux_backend
def test_about_proc():
    pass

@pytest.mark.linux_backend
@pytest.mark.parametrize("n", [1, 2])
def test_about_psi(n):
    pass

def test_neutral():
    pass
"""


def run_example(tmp_path: Path, backend: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_example.py").write_text(EXAMPLE)
    env = {
        **os.environ,
        "RESGUARD_BACKEND": backend,
        "RESGUARD_REQUIRE_INTEGRATION": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "pytest", "-p", "plugins.backends", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*command, "-ra", "-o", "markers=linux_backend: about linux", "test_example.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_on_psutil_the_linux_backend_tests_skip_with_the_reason_and_are_counted(
    tmp_path: Path,
) -> None:
    out = run_example(tmp_path, "psutil")
    assert out.returncode == 0, out.stdout + out.stderr  # skips, not integration failures
    assert "1 passed, 3 skipped" in out.stdout
    assert "3 tests skipped: about the linux backend (RESGUARD_BACKEND=psutil)" in out.stdout
    reason = "about the linux backend (real /proc, cgroups, PSI); this run uses RESGUARD_BACKEND"
    assert out.stdout.count(reason) == 2  # the -ra lines: one per test function


@pytest.mark.parametrize("backend", ["linux", ""])
def test_on_linux_the_linux_backend_tests_run_and_nothing_is_counted(
    tmp_path: Path, backend: str
) -> None:
    if backend == "" and not sys.platform.startswith("linux"):
        pytest.skip("the platform's own backend is linux only on Linux")
    out = run_example(tmp_path, backend)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 passed" in out.stdout
    assert "skipped" not in out.stdout


def test_off_linux_the_reason_names_the_platform_not_a_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from plugins import backends

    monkeypatch.setenv("RESGUARD_BACKEND", "psutil")
    assert backends.why() == "RESGUARD_BACKEND=psutil"
    monkeypatch.delenv("RESGUARD_BACKEND")  # on macOS or Windows psutil is the default
    assert backends.why() == "the psutil backend, this platform's own"
