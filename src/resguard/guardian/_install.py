"""What ``resguard guardian --install`` writes: a systemd user unit (Linux) or a launchd
agent (macOS) that runs the guardian at login, with the absolute path of the running
interpreter's ``resguard``. Only the text and where it goes: the command writes it,
refuses to overwrite without ``--force``, prints how to enable it and enables nothing."""

from __future__ import annotations

import os
import plistlib
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from resguard._errors import InvalidValue

__all__ = [
    "LAUNCHD_LABEL",
    "SYSTEMD_UNIT",
    "check_path",
    "enable_hint",
    "guardian_command",
    "launchd_plist",
    "systemd_unit",
    "unit_path",
]

SYSTEMD_UNIT = "resguard-guardian.service"
LAUNCHD_LABEL = "io.resguard.guardian"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def check_path(path: str, what: str) -> str:
    """*path* when it holds no control character (a newline would add a line to the unit
    file: ``ExecStartPre=...``); else :class:`~resguard.InvalidValue` naming *what*."""
    if _CONTROL.search(path):
        raise InvalidValue(f"{what} {path!r} holds a control character; a unit cannot name it")
    return path


def guardian_command(config: str | None = None) -> list[str]:
    """The command line the service runs: the ``resguard`` beside this interpreter when it
    exists (a virtual environment's), else ``python -m resguard``; then ``guardian``."""
    executable = Path(sys.executable).absolute()
    script = executable.parent / "resguard"
    head = [str(script)] if script.is_file() else [str(executable), "-m", "resguard"]
    tail = ["--config", str(Path(config).absolute())] if config is not None else []
    command = [*head, "guardian", *tail]
    for word in command:
        check_path(word, "the path")
    return command


def _systemd_quote(word: str) -> str:
    """One ``ExecStart`` word: quoted when it holds a space or a special character, with
    ``%`` (a specifier) doubled and ``$`` (a variable) doubled."""
    escaped = word.replace("%", "%%").replace("$", "$$")
    if escaped and all(c.isalnum() or c in "/._-+=:,@" for c in escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(command: Sequence[str]) -> str:
    """A systemd user unit running *command* at login, restarted when it fails."""
    exec_start = " ".join(_systemd_quote(word) for word in command)
    return (
        "[Unit]\n"
        "Description=resguard guardian: watches this machine and acts on its policy\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        "Restart=on-failure\n"
        "RestartSec=10\n"
        "KillSignal=SIGTERM\n"
        "TimeoutStopSec=30\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def launchd_plist(command: Sequence[str], log_dir: str) -> bytes:
    """A launchd agent running *command* at login, kept alive, logging under *log_dir*."""
    return plistlib.dumps(
        {
            "Label": LAUNCHD_LABEL,
            "ProgramArguments": list(command),
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "StandardOutPath": os.path.join(log_dir, "resguard-guardian.log"),
            "StandardErrorPath": os.path.join(log_dir, "resguard-guardian.log"),
        }
    )


def unit_path(platform: str, environ: Mapping[str, str] = os.environ) -> Path:
    """Where the unit of *platform* (``"linux"`` or ``"macos"``) goes for this user:
    ``$XDG_CONFIG_HOME/systemd/user`` (an unset or relative ``XDG_CONFIG_HOME`` is ignored,
    as the XDG specification says: ``~/.config``), ``~/Library/LaunchAgents`` on macOS.
    A ``HOME`` that is empty or relative is an
    :class:`~resguard.InvalidValue` (pass ``--output``)."""
    home_text = environ.get("HOME")
    if home_text is None:
        home_text = str(Path.home())
    if not os.path.isabs(home_text):
        raise InvalidValue(f"HOME={home_text!r} is not an absolute path; set HOME or pass --output")
    home = Path(check_path(home_text, "HOME"))
    if platform == "macos":
        return home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    xdg = environ.get("XDG_CONFIG_HOME", "")
    config = Path(check_path(xdg, "XDG_CONFIG_HOME")) if os.path.isabs(xdg) else home / ".config"
    return config / "systemd" / "user" / SYSTEMD_UNIT


def enable_hint(platform: str, path: Path, environ: Mapping[str, str] = os.environ) -> str:
    """What to run to enable the unit written at *path* (nothing is enabled for you)."""
    home = unit_path(platform, environ)
    if platform == "macos":
        hint = f"launchctl bootstrap gui/$(id -u) {shlex.quote(str(home))}"
    else:
        hint = "systemctl --user daemon-reload && systemctl --user enable --now resguard-guardian"
    if path.absolute() != home.absolute():
        hint = f"copy it to {shlex.quote(str(home))}, then: {hint}"
    return hint
