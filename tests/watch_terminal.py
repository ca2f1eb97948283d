"""A real pty running ``resguard watch`` for the tests of its live view
(tests/test_watch_tty.py, tests/test_cli_watch_view.py): sized as a person's terminal,
what the program wrote read back with deadlines, never sleeps."""

from __future__ import annotations

import fcntl
import os
import re
import selectors
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable

from resguard.cli._screen import CLEAR

SGR = re.compile(rb"\x1b\[[0-9;]*m")
DEADLINE_S = 8.0


class Terminal:
    """``resguard watch`` running on a pty of *columns* × *lines*; what it wrote so far."""

    def __init__(
        self, *args: str, columns: int = 80, lines: int = 24, env: dict[str, str] | None = None
    ) -> None:
        self.master, self.secondary = os.openpty()
        fcntl.ioctl(self.secondary, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.mode_before = termios.tcgetattr(self.secondary)
        environ = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
        environ.update({"TERM": "xterm-256color", **(env or {})})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "resguard", "watch", "--interval", "0.2", *args],
            stdin=self.secondary,
            stdout=self.secondary,
            stderr=self.secondary,
            env=environ,
            close_fds=True,
        )
        self.output = b""

    def read_until(self, done: Callable[[bytes], bool], what: str) -> bytes:
        deadline = time.monotonic() + DEADLINE_S
        while not done(self.output):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {self.output[-2000:]!r}")
            if self._readable(0.05):
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the pty closed: the program is gone
                    if self.process.poll() is not None:
                        break
        return self.output

    def first_frame(self) -> bytes:
        return self.read_until(lambda out: frames(out) != [], "a whole frame")

    def exit_code(self) -> int:
        """Wait for the program to end (reading what it writes meanwhile)."""
        self.read_until(lambda _: self.process.poll() is not None, "the program to exit")
        self.process.wait(timeout=DEADLINE_S)
        self._drain()
        return self.process.returncode

    def _readable(self, timeout_s: float) -> bool:
        """Whether the program wrote something within *timeout_s* (a poll selector:
        select() fails on a descriptor of 1024 or more, which a long test session reaches)."""
        with selectors.PollSelector() as selector:
            selector.register(self.master, selectors.EVENT_READ)
            return bool(selector.select(timeout_s))

    def _drain(self) -> None:
        while True:
            if not self._readable(0.05):
                return
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.output += chunk

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE_S)
        os.close(self.master)
        os.close(self.secondary)


def frames(output: bytes) -> list[bytes]:
    """The complete frames written: from a clear to the footer's end."""
    frames = []
    for part in output.split(CLEAR.encode())[1:]:
        text = SGR.sub(b"", part)
        if b"sort by memory" in text:
            frames.append(part[: part.rfind(b"memory") + len(b"memory")])
    return frames
