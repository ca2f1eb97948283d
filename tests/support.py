"""Small helpers shared by several test modules (fixtures live in tests/plugins/)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_python(code: str) -> str:
    """Run *code* in a fresh interpreter (this one's) and return what it printed."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def wait_until(predicate: Callable[[], object], *, timeout_s: float = 10.0, what: str) -> None:
    """Poll *predicate* until it is true; fail the test with *what* after *timeout_s*.

    For waiting on another process or thread to reach a state (a real integration test);
    timing logic is tested with ``resguard.testing.ManualClock`` instead.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.005)
