"""A loaded model's runner: a child process that really holds the model's (scaled) size."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from resguard.testing.ollama._catalogue import CatalogueModel

__all__ = ["Fault", "Runner", "kill", "spawn"]

_RUNNER = (
    "import sys\n"
    "block = b'\\x01' * int(sys.argv[1])\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
    "sys.stdin.read()\n"
)


@dataclass
class Runner:
    """A loaded (or loading) model: its child process and scheduler state."""

    model: CatalogueModel
    keep_alive_s: float
    process: subprocess.Popen[bytes] | None = None
    in_flight: int = 0
    loading: bool = True
    expires_at: float | None = None
    stopping: bool = False
    started: float = 0.0
    loaded_event: threading.Event = field(default_factory=threading.Event)


@dataclass
class Fault:
    status: int
    message: str
    paths: tuple[str, ...] | None
    remaining: int | None


def spawn(model: CatalogueModel, scale: float, cgroup: Path | None) -> subprocess.Popen[bytes]:
    """Start *model*'s runner (inside *cgroup* when given) once it holds its memory."""
    nbytes = max(1, int(model.loaded_bytes * scale))
    argv = [sys.executable, "-I", "-S", "-c", _RUNNER, str(nbytes)]
    if cgroup is not None:
        procs = cgroup / "cgroup.procs"
        argv = ["/bin/sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *argv]
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != b"ready":
        process.kill()
        process.wait()
        raise RuntimeError(f"runner for {model.name} failed to start (exit {process.poll()})")
    return process


def kill(runner: Runner) -> None:
    process = runner.process
    if process is None:
        return
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
