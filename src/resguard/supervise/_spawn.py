"""Start the command with its budget applied before it runs a single instruction of its
own, without ``preexec_fn``.

The child is a tiny wrapper (this interpreter with ``-I -S``, a few lines) that waits on a
pipe; the parent puts the waiting child's pid into the cgroup (or sets its RLIMIT_AS with
``prlimit``), then writes ``1`` on the pipe, and only then does the wrapper ``exec`` the
command. Nothing races: the command cannot allocate before it is in its budget, and the
pages the wrapper touched before the move stay charged where they were. If the budget
cannot be applied, the pipe is closed without the byte and the wrapper exits 125 without
running anything. ``preexec_fn`` is not safe with threads; a fork of this interpreter
would run its code between fork and exec.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence

__all__ = ["NOT_STARTED", "spawn"]

NOT_STARTED = 125  # the wrapper's code when told not to exec

_WRAPPER = """\
import os, signal, sys
for name in ("SIGINT", "SIGPIPE", "SIGXFSZ"):
    signal.signal(getattr(signal, name), signal.SIG_DFL)
fd = int(sys.argv[1])
go = os.read(fd, 1)
os.close(fd)
if go != b"1":
    os._exit(125)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as error:
    sys.stderr.write(f"resguard run: cannot run {sys.argv[2]!r}: {error.strerror}\\n")
    os._exit(126 if isinstance(error, PermissionError) else 127)
"""


def spawn(argv: Sequence[str], apply_budget: Callable[[int], None]) -> subprocess.Popen[bytes]:
    """Start *argv* with ``apply_budget(pid)`` done before it execs; what
    *apply_budget* raises is raised here, after the wrapper was told to exit."""
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WRAPPER, str(read_end), *argv],
            pass_fds=(read_end,),
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    try:
        apply_budget(process.pid)
    except BaseException:
        os.close(write_end)  # no byte: the wrapper exits 125
        process.wait()
        raise
    try:
        os.write(write_end, b"1")
    finally:
        os.close(write_end)
    return process
