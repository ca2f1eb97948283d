"""Desktop notifications for the guardian: ``notify-send`` on Linux, ``osascript`` on
macOS, whichever is on ``PATH``, else a log line.

The notifier runs as a child process with an argument vector (never a shell) and a
deadline, so a hanging notification daemon never stalls the guardian. For ``osascript``
the text goes inside an AppleScript string literal: backslashes and double quotes are
escaped there, and control characters (newlines included) become spaces, so no text can
end the literal and run as script.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable

from resguard._modules.log import get_logger
from resguard._probes.names import clean_text

__all__ = ["NOTIFY_TIMEOUT_S", "Notifier", "applescript_string", "notification_argv"]

_logger = get_logger("resguard.guardian")

NOTIFY_TIMEOUT_S = 5.0
"""How long a notifier may run before it is killed and the notification counts as failed."""
_MAX_TEXT = 400  # characters of a title or body; a notification is not a report


def _flat(text: str) -> str:
    """*text* printable and on one line: control characters (NUL, newlines, escapes) as
    spaces, what is not UTF-8 as U+FFFD."""
    return "".join(" " if ord(char) < 32 or ord(char) == 127 else char for char in clean_text(text))


def applescript_string(text: str) -> str:
    """*text* as an AppleScript string literal: ``"`` and ``\\`` escaped, control
    characters as spaces (AppleScript has no escape for most of them)."""
    return '"' + _flat(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _short(text: str) -> str:
    text = _flat(text)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def notification_argv(program: str, title: str, body: str) -> list[str]:
    """The argument vector that shows *title* and *body* through *program* (the path of
    ``notify-send`` or ``osascript``)."""
    title, body = _short(title), _short(body)
    if program.rsplit("/", 1)[-1] == "osascript":
        script = (
            f"display notification {applescript_string(body)} "
            f"with title {applescript_string(title)}"
        )
        return [program, "-e", script]
    # "--" ends the options: a body that starts with "-" is shown, not parsed
    return [program, "--app-name=resguard", "--", title, body]


class Notifier:
    """Shows a desktop notification, or logs it where no notifier is found.

    *which* finds a program on ``PATH`` (``shutil.which``; tests pass their own) and
    *platform* is ``sys.platform``; *timeout_s* bounds each notification.
    """

    def __init__(
        self,
        *,
        which: Callable[[str], str | None] = shutil.which,
        platform: str = sys.platform,
        timeout_s: float = NOTIFY_TIMEOUT_S,
    ) -> None:
        self._which = which
        self._platform = platform
        self.timeout_s = timeout_s

    def program(self) -> str | None:
        """The notifier this platform would run: ``notify-send`` or ``osascript``, when on
        ``PATH``; ``None`` otherwise."""
        return self._which("osascript" if self._platform == "darwin" else "notify-send") or None

    def notify(self, title: str, body: str) -> str | None:
        """Show *title* and *body* (or log them where there is no notifier); ``None`` when
        done, else why it failed (then they are logged as well)."""
        program = self.program()
        shown = _short(title).removeprefix("resguard: ")  # the log's own prefix says it
        if program is None:
            _logger.warning("%s: %s", shown, _short(body))
            return None
        failed = self._run(program, notification_argv(program, title, body))
        if failed is not None:  # the alert is never lost: it is logged instead
            _logger.warning("%s: %s (failed: %s)", shown, _short(body), failed)
        return failed

    def _run(self, program: str, argv: list[str]) -> str | None:
        try:
            finished = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"{program} did not finish within {self.timeout_s:g} s"
        except OSError as error:
            return f"{program} could not run: {error.strerror or error}"
        if finished.returncode != 0:
            said = clean_text(finished.stderr.decode("utf-8", "replace").strip())[:200]
            return f"{program} exited with {finished.returncode}" + (f": {said}" if said else "")
        return None
