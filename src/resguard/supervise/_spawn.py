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

The wrapper asks the kernel to SIGKILL it (and so the command it becomes) when resguard
dies (``PR_SET_PDEATHSIG``: a SIGKILL of resguard does not leave the command running
unsupervised; a process the command forked keeps running, in the cgroup where there is
one). An ``exec`` that fails is told to the parent on a close-on-exec status pipe (its
errno), so it is a start that failed, not a run that crashed: :class:`NotStarted`, with
the code a shell gives (127 when the file or its interpreter is not found, 126 else).
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress

import attrs

__all__ = ["NOT_STARTED", "NotStarted", "exec_failure_code", "spawn"]

NOT_STARTED = 125  # the wrapper's code when told not to exec
_STATUS_TIMEOUT_S = 10.0  # an exec takes milliseconds; past this the start is taken as made

_WRAPPER = """\
import os, signal, sys
for name in ("SIGINT", "SIGPIPE", "SIGXFSZ"):
    signal.signal(getattr(signal, name), signal.SIG_DFL)
fd, status, parent, group = (int(word) for word in sys.argv[1:5])
if group:
    os.setpgid(0, 0)  # a group of its own (the parent does it too: whichever is first)
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
except (ImportError, OSError, AttributeError):
    pass
if os.getppid() != parent:  # resguard died before the prctl
    os._exit(125)
go = os.read(fd, 1)
os.close(fd)
if go != b"1":
    os._exit(125)
os.set_inheritable(status, False)
try:
    os.execvp(sys.argv[5], sys.argv[5:])
except OSError as error:
    os.write(status, str(error.errno or 0).encode() + b" " + (error.strerror or "").encode())
    os._exit(127 if error.errno in (2, 20) else 126)
"""


def exec_failure_code(number: int) -> int:
    """The code a shell gives a command whose ``exec`` failed with errno *number*: 127
    when the file (or its ``#!`` interpreter) is not found, 126 when it cannot be run."""
    return 127 if number in (errno.ENOENT, errno.ENOTDIR) else 126


@attrs.frozen
class NotStarted:
    """The command's ``exec`` failed in the wrapper with *errno*: nothing of it ran; *code*
    is what a shell would exit with."""

    errno: int
    strerror: str
    code: int


def _exec_status(status_fd: int) -> NotStarted | None:
    """What the wrapper said of its ``exec``: nothing (EOF at the exec) or its errno."""
    data = b""
    ready, _, _ = select.select([status_fd], [], [], _STATUS_TIMEOUT_S)
    while ready:
        chunk = os.read(status_fd, 512)
        if not chunk:
            break
        data += chunk
        ready, _, _ = select.select([status_fd], [], [], _STATUS_TIMEOUT_S)
    if not data:
        return None
    number_text, _, strerror = data.decode("utf-8", "replace").partition(" ")
    number = int(number_text) if number_text.isdigit() else 0
    return NotStarted(number, strerror or "cannot be run", exec_failure_code(number))


def spawn(
    argv: Sequence[str], apply_budget: Callable[[int], None], *, own_group: bool = False
) -> subprocess.Popen[bytes] | NotStarted:
    """Start *argv* with ``apply_budget(pid)`` done before it execs (in a process group
    of its own when *own_group*); what *apply_budget* raises is raised here, after the
    wrapper was told to exit; a :class:`NotStarted` is returned when the ``exec`` failed."""
    read_end, write_end = os.pipe()
    status_read, status_write = os.pipe()
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                _WRAPPER,
                str(read_end),
                str(status_write),
                str(os.getpid()),
                "1" if own_group else "0",
                *argv,
            ],
            pass_fds=(read_end, status_write),
        )
    except BaseException:
        os.close(write_end)
        os.close(status_read)
        raise
    finally:
        os.close(read_end)
        os.close(status_write)
    if own_group:
        with suppress(OSError):  # the wrapper may have done it (or exec'd: it has not yet)
            os.setpgid(process.pid, process.pid)
    try:
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
        failed = _exec_status(status_read)
    finally:
        os.close(status_read)
    if failed is not None:
        process.wait()
        return failed
    return process
