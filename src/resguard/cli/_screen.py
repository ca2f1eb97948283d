"""The terminal of ``resguard watch``'s live view: the alternate screen, a hidden cursor
and keys read without blocking, all put back on exit (normal, Ctrl-C, SIGTERM or an
error), and frames painted in colour with rich, or plain.

rich is imported here only, lazily, when a frame is painted in colour: ``import
resguard``, ``resguard --help``, ``--once``, ``--json`` and a pipe never need it. Colour
is off when ``NO_COLOR`` is set to anything but an empty string (https://no-color.org)
or ``TERM=dumb``; without rich (the ``cli`` extra) the frame is plain and the view says
once how to get colour. A ``TERM=dumb`` terminal gets no live view at all
(:func:`redraws`): ``resguard watch`` writes it one line per update.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
from types import FrameType, TracebackType
from typing import Any, TextIO

from resguard.cli._view import Frame

__all__ = [
    "ALT_SCREEN_OFF",
    "ALT_SCREEN_ON",
    "CLEAR",
    "RESIZED",
    "RICH_HINT",
    "STYLES",
    "Screen",
    "colour_wanted",
    "paint",
    "redraws",
]

ALT_SCREEN_ON = "\x1b[?1049h\x1b[?25l"  # the alternate screen, the cursor hidden
ALT_SCREEN_OFF = "\x1b[?25h\x1b[?1049l"  # the cursor shown, the main screen back
CLEAR = "\x1b[H\x1b[2J"
RESIZED = "resized"  # what Screen.key() answers when the terminal changed size
RICH_HINT = "resguard watch: no colour without rich; pip install 'resguard[cli]'"
STYLES = {
    "": "",
    "OK": "bold green",
    "WARNING": "bold yellow",
    "CRITICAL": "bold red",
    "unknown": "dim",
    "culprit": "bold magenta",
    "title": "bold",
    "key": "bold cyan",
    "active": "underline",
}


_DUMB = ("dumb", "")


def colour_wanted(out: TextIO, environ: Any = None) -> bool:
    """Whether the live view on *out* may use colour: a terminal, ``NO_COLOR`` unset or
    empty, ``TERM`` not ``dumb`` nor set empty (a terminal that names no type)."""
    environ = os.environ if environ is None else environ
    if environ.get("NO_COLOR", "") != "" or environ.get("TERM") in _DUMB:
        return False
    try:
        return bool(out.isatty())
    except (OSError, ValueError):
        return False


def _rich_console(width: int) -> Any:
    """A rich console writing ANSI into a buffer, or None when rich is not installed."""
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(
        file=io.StringIO(),
        force_terminal=True,
        color_system="standard",
        width=width,
        no_color=False,
        highlight=False,
        emoji=False,
        markup=False,
        legacy_windows=False,
        soft_wrap=False,
    )


def paint(frame: Frame, colour: bool) -> tuple[str, bool]:
    """*frame* as text for the terminal, coloured by level when *colour* and rich is
    there; and whether it was (``False`` with *colour*: rich is missing)."""
    console = _rich_console(frame.width) if colour else None
    if console is None:
        return frame.plain(), False
    from rich.text import Text

    for line in frame.lines:
        text = Text(no_wrap=True, overflow="crop")
        for segment in line:
            text.append(segment.text, style=STYLES.get(segment.style, ""))
        console.print(text)
    painted: str = console.file.getvalue()
    return painted.rstrip("\n"), True


class Screen:
    """The live view's terminal as a context manager: on entry the alternate screen (and
    no cursor), keys in cbreak mode when *keys* is a terminal and termios exists, and
    SIGTERM noted (``terminated``) and a resize (SIGWINCH), each waking :meth:`key`; on
    exit all of it undone, whatever ended the view (``q``, Ctrl-C, SIGTERM, an error).
    With ``alternate=False`` (the line-by-line stream) only the keys and SIGTERM: no
    alternate screen, and the log is not held back."""

    def __init__(
        self, out: TextIO, keys: TextIO | None = None, *, colour: bool, alternate: bool = True
    ) -> None:
        self.out = out
        self.alternate = alternate
        self.colour = colour
        self.terminated = False
        self.resized = False
        self.hinted = False
        self._keys_fd = _terminal_fd(keys)
        self._saved_mode: Any = None
        self._saved_term: Any = None
        self._saved_winch: Any = None
        self._wake: tuple[int, int] | None = None
        self._held: _Held | None = None

    def __enter__(self) -> Screen:
        if os.name == "posix":  # poll() waits on pipes only there
            self._wake = os.pipe()
            os.set_blocking(self._wake[1], False)
        self._saved_term = _on_signal(signal.SIGTERM, self._sigterm)
        winch = getattr(signal, "SIGWINCH", None)
        self._saved_winch = None if winch is None else _on_signal(winch, self._sigwinch)
        if self.alternate:
            self._held = _hold_logs()
            self.out.write(ALT_SCREEN_ON)
            self.out.flush()
        self._saved_mode = _cbreak(self._keys_fd)
        if self._saved_mode is None:  # no termios (Windows) or no mode to set: no keys
            self._keys_fd = None
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            _restore(self._keys_fd, self._saved_mode)
            if self.alternate:
                self.out.write(ALT_SCREEN_OFF)
                self.out.flush()
        finally:
            if self._saved_term is not None:
                signal.signal(signal.SIGTERM, self._saved_term)
            if self._saved_winch is not None:
                signal.signal(signal.SIGWINCH, self._saved_winch)
            if self._wake is not None:
                for fd in self._wake:
                    os.close(fd)
                self._wake = None
            _release_logs(self._held)
        if self.hinted:
            _hint()

    def _sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.terminated = True
        self._wake_up()

    def _sigwinch(self, signum: int, frame: FrameType | None) -> None:
        self.resized = True
        self._wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None:
            try:
                os.write(self._wake[1], b"T")
            except OSError:  # the pipe is full: it is awake already
                pass

    def show(self, frame: Frame) -> None:
        """Replace the screen with *frame*."""
        text, coloured = paint(frame, self.colour)
        if self.colour and not coloured:
            self.hinted = True
        self.out.write(CLEAR + text)
        self.out.flush()

    def key(self, timeout_s: float) -> str | None:
        """The next key pressed within *timeout_s* (waiting that long otherwise);
        :data:`RESIZED` when the terminal changed size meanwhile; ``None`` when no key
        was pressed, when keys cannot be read (no terminal, no termios) or when SIGTERM
        arrived (``terminated``)."""
        import time

        waits = [
            fd for fd in (self._keys_fd, self._wake[0] if self._wake else None) if fd is not None
        ]
        if not waits:  # no keys and nothing to wake on (Windows): only the period
            time.sleep(max(timeout_s, 0.0))
            return None
        ready = _ready(waits, max(timeout_s, 0.0))
        if self._wake is not None and self._wake[0] in ready:
            os.read(self._wake[0], 64)  # drained: the next wait waits again
        if self.terminated:
            return None
        if self.resized:
            self.resized = False
            return RESIZED
        if self._keys_fd is None or self._keys_fd not in ready:
            return None
        data = os.read(self._keys_fd, 64)
        if not data:  # the terminal hung up: no more keys, only the period
            self._keys_fd = None
            return None
        return data[:1].decode("latin-1")


def _ready(fds: list[int], timeout_s: float) -> set[int]:
    """Which of *fds* can be read within *timeout_s*: poll(2) where there is one, which
    takes any descriptor (select(2) fails on one of 1024 or more, which a process that
    keeps many files open reaches)."""
    import selectors

    kind = getattr(selectors, "PollSelector", selectors.DefaultSelector)
    with kind() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        return {int(key.fd) for key, _ in selector.select(timeout_s)}


def redraws(out: TextIO, environ: Any = None) -> bool:
    """Whether *out* gets the live view (the alternate screen, a frame redrawn in place):
    a terminal that can move its cursor. ``TERM=dumb`` (Emacs' shell, a serial console)
    cannot: it gets one line per update, as a pipe does; so does ``TERM`` set empty (no
    terminal type named: nothing says it can)."""
    environ = os.environ if environ is None else environ
    if environ.get("TERM") in _DUMB:
        return False
    try:
        return bool(out.isatty())
    except (OSError, ValueError):
        return False


class _Held(logging.Handler):
    """Log records kept while the alternate screen is up (a warning written to stderr
    would tear the frame), written to stderr once the terminal is back."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = f"{record.levelname.lower()}: {record.getMessage()}"
        if line not in self.lines and len(self.lines) < 20:
            self.lines.append(line)


def _hold_logs() -> _Held | None:
    """Hold resguard's warnings while nobody configured logging (they would go to stderr,
    onto the frame); ``None`` when logging goes where its owner said."""
    if logging.getLogger().handlers:
        return None
    held = _Held()
    logger = logging.getLogger("resguard")
    logger.addHandler(held)
    logger.propagate = False
    return held


def _release_logs(held: _Held | None) -> None:
    if held is None:
        return
    logger = logging.getLogger("resguard")
    logger.removeHandler(held)
    logger.propagate = True
    from resguard.cli._args import error_line

    for line in held.lines:
        error_line(f"resguard watch: {line}")


def _hint() -> None:
    from resguard.cli._args import error_line

    error_line(RICH_HINT)


def _on_signal(signum: int, handler: Any) -> Any:
    """Install *handler* for *signum* (main thread only); the previous one, or None."""
    try:
        return signal.signal(signum, handler)
    except (ValueError, OSError):  # not the main thread: leave SIGTERM as it is
        return None


def _terminal_fd(keys: TextIO | None) -> int | None:
    if keys is None:
        return None
    try:
        fd = keys.fileno()
        return fd if os.isatty(fd) else None
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None


def _cbreak(fd: int | None) -> Any:
    """Put terminal *fd* in cbreak mode (keys one at a time, not echoed; Ctrl-C still
    interrupts); its previous mode, or None (no terminal, no termios)."""
    if fd is None:
        return None
    try:
        import termios
    except ImportError:  # Windows: no keys
        return None
    try:
        saved = termios.tcgetattr(fd)
        mode = termios.tcgetattr(fd)
        mode[3] &= ~(termios.ECHO | termios.ICANON)
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, mode)
    except (termios.error, OSError):
        return None
    return saved


def _restore(fd: int | None, saved: Any) -> None:
    if fd is None or saved is None:
        return
    import termios

    try:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    except (termios.error, OSError):
        pass


def default_keys() -> TextIO | None:
    """Where keys come from: stdin, when it is there."""
    return sys.stdin if sys.stdin is not None else None
