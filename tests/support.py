"""Small helpers shared by several test modules (fixtures live in tests/plugins/)."""

from __future__ import annotations

import socket
import subprocess
import sys


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
