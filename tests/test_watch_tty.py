"""``resguard watch`` on a real terminal: a pty sized as a person's (80×24), the command
run as a user would, the bytes it writes read back. The alternate screen is entered and
left (on ``q``, SIGINT and SIGTERM) and the terminal's mode given back; a frame fits the
screen; a command line with a newline and an escape sequence never reaches the terminal
raw; ``NO_COLOR`` and a pipe mean no colour; without rich the frame is plain and says
once how to get colour. Every wait polls with a deadline."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from resguard.cli._screen import ALT_SCREEN_OFF, ALT_SCREEN_ON, CLEAR, RICH_HINT
from resguard.cli._view import FOOTER, cells
from watch_terminal import DEADLINE_S, SGR, Terminal, frames

ALT_ON, ALT_OFF = ALT_SCREEN_ON.encode(), ALT_SCREEN_OFF.encode()
ENTER, LEAVE = b"\x1b[?1049h", b"\x1b[?1049l"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no pty on Windows")


def _screen_lines(frame: bytes) -> list[str]:
    """A frame as the lines a person sees: colour codes removed, the pty's CRLF split."""
    return SGR.sub(b"", frame).decode().replace("\r\n", "\n").split("\n")


@pytest.fixture
def terminal() -> Iterator[Callable[..., Terminal]]:
    started: list[Terminal] = []

    def start(*args: str, **options: object) -> Terminal:
        started.append(Terminal(*args, **options))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for each in started:
        each.close()


def _mode_restored(term: Terminal) -> None:
    mode = termios.tcgetattr(term.secondary)
    assert mode[3] & termios.ICANON, "cbreak mode left on"
    assert mode[3] & termios.ECHO, "echo left off"
    assert mode == term.mode_before


def test_q_leaves_the_alternate_screen_and_gives_the_terminal_back(
    terminal: Callable[..., Terminal],
) -> None:
    term = terminal()
    out = term.first_frame()
    assert out.startswith(ENTER), out[:40]
    os.write(term.master, b"q")
    assert term.exit_code() == 0
    assert term.output.rstrip().endswith(ALT_OFF), term.output[-80:]
    assert term.output.count(ENTER) == 1
    assert term.output.count(LEAVE) == 1
    assert b"\x1b[?25h" in term.output.split(CLEAR.encode())[-1]  # the cursor shown again
    _mode_restored(term)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_leaves_the_alternate_screen_without_a_traceback(
    terminal: Callable[..., Terminal], signum: int, code: int
) -> None:
    term = terminal()
    term.first_frame()
    term.process.send_signal(signum)
    assert term.exit_code() == code
    assert LEAVE in term.output.split(CLEAR.encode())[-1]
    assert b"Traceback" not in term.output
    _mode_restored(term)


def test_a_frame_fits_an_80_by_24_terminal(terminal: Callable[..., Terminal]) -> None:
    term = terminal("-n", "40")  # more rows asked than the screen holds
    term.first_frame()
    os.write(term.master, b"q")
    term.exit_code()
    for frame in frames(term.output):
        lines = _screen_lines(frame)
        assert len(lines) <= 24, lines
        assert all(cells(line) <= 80 for line in lines), [
            line for line in lines if cells(line) > 80
        ]
        assert "verdict:" in lines[0]
        assert lines[-1] == FOOTER
        assert any(line.lstrip().startswith("PID") for line in lines), lines


def _hostile_child() -> subprocess.Popen[bytes]:
    code = "import sys, time; sys.stdin.read()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "rgmark\nsecond", "\x1b[31mred", "bell\x07\x9bend"],
        stdin=subprocess.PIPE,
    )


def test_a_command_line_with_control_characters_never_reaches_the_terminal_raw(
    terminal: Callable[..., Terminal],
) -> None:
    child = _hostile_child()
    try:
        term = terminal("-n", "1000", columns=400, lines=600, env={"NO_COLOR": "1"})
        out = term.read_until(lambda out: b"rgmark" in out, "the child's command line")
        term.read_until(lambda out: b"bell" in out.split(b"rgmark", 1)[1], "its last word")
        os.write(term.master, b"q")
        term.exit_code()
    finally:
        child.kill()
        child.wait(timeout=DEADLINE_S)
    out = term.output
    assert b"rgmark\\nsecond" in out
    assert b"\\x1b[31mred" in out
    assert b"bell\\x07\\x9bend" in out
    assert b"rgmark\n" not in out
    assert b"rgmark\r" not in out
    assert b"\x1b[31m" not in out
    assert b"\x07" not in out
    assert "\x9b".encode() not in out


def test_no_color_means_no_colour_codes(terminal: Callable[..., Terminal]) -> None:
    term = terminal(env={"NO_COLOR": "1"})
    term.first_frame()
    os.write(term.master, b"q")
    term.exit_code()
    assert SGR.search(term.output) is None, SGR.findall(term.output)[:5]
    assert term.output.startswith(ENTER)  # still the live view, only without colour


def test_on_a_terminal_the_level_is_coloured(terminal: Callable[..., Terminal]) -> None:
    term = terminal()
    frame = term.first_frame().split(CLEAR.encode())[1]
    os.write(term.master, b"q")
    term.exit_code()
    first_line = frame.split(b"\n")[0]
    assert re.search(rb"\x1b\[1;3[123]m(OK|WARNING|CRITICAL)", first_line), first_line


def test_keys_sort_the_table_by_memory_and_by_cpu(terminal: Callable[..., Terminal]) -> None:
    term = terminal("--interval", "30", env={"NO_COLOR": "1"})  # no new sample meanwhile
    term.first_frame()
    os.write(term.master, b"m")
    term.read_until(lambda out: b"processes by memory" in out, "the table sorted by memory")
    rss_order = _column(frames(term.output)[-1], "RSS")
    os.write(term.master, b"c")
    term.read_until(
        lambda out: b"processes by CPU" in out.split(b"processes by memory")[-1],
        "the table sorted by CPU again",
    )
    os.write(term.master, b"q")
    assert term.exit_code() == 0
    from resguard.units import parse_bytes

    sizes = [parse_bytes(text) for text in rss_order]
    assert sizes == sorted(sizes, reverse=True), rss_order


def _column(frame: bytes, title: str) -> list[str]:
    lines = _screen_lines(frame)
    (header,) = [index for index, line in enumerate(lines) if line.lstrip().startswith("PID")]
    position = lines[header].split().index(title)
    rows = lines[header + 1 : -1]
    return [" ".join(line[1:].split()[position : position + 2]) for line in rows if line.strip()]


def test_without_rich_the_frame_is_plain_and_says_once_how_to_get_colour(
    terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    shadow = tmp_path / "rich"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('no rich here', name='rich')\n")
    term = terminal(env={"PYTHONPATH": str(tmp_path)})
    term.first_frame()
    term.read_until(lambda out: len(frames(out)) >= 2, "a second frame")
    os.write(term.master, b"q")
    assert term.exit_code() == 0
    assert SGR.search(term.output) is None
    assert term.output.count(RICH_HINT.encode()) == 1
    assert RICH_HINT.encode() in term.output.split(LEAVE)[-1]  # after the screen is back


def test_piped_output_is_plain_lines() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "resguard", "watch", "--count", "2", "--interval", "0.1"],
        capture_output=True,
        env={**os.environ, "TERM": "xterm-256color"},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert b"\x1b" not in out.stdout
    lines = out.stdout.decode().splitlines()
    assert len(lines) == 2
    assert all(re.match(r"\d\d:\d\d:\d\d (OK|WARNING|CRITICAL) ", line) for line in lines), lines


def test_the_library_and_help_never_import_rich() -> None:
    code = (
        "import sys, io, contextlib\n"
        "import resguard\n"
        "assert 'rich' not in sys.modules, 'import resguard'\n"
        "from resguard.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help']); main(['watch', '--help'])\n"
        "assert 'rich' not in sys.modules, '--help'\n"
        "print('clean')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().endswith("clean"), done.stderr


@pytest.mark.parametrize(
    "args",
    [["--once", "--json", "--window", "0.25"], ["--once"], ["--count", "1", "--interval", "0.1"]],
)
def test_once_json_and_piped_output_never_need_rich(tmp_path: Path, args: list[str]) -> None:
    """(httpx, under the ollama extra, imports rich when it is there: not resguard's
    import, so the check is that watch works without it.)"""
    shadow = tmp_path / "rich"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('no rich here', name='rich')\n")
    done = subprocess.run(
        [sys.executable, "-m", "resguard", "watch", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr
    assert done.stderr == ""
    assert done.stdout.strip()


def _tmux(socket: str, *args: str) -> str:
    done = subprocess.run(
        ["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=DEADLINE_S
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _poll(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        select.select([], [], [], 0.05)


@pytest.mark.skipif(
    not Path("/usr/bin/tmux").exists() and not Path("/usr/local/bin/tmux").exists(),
    reason="tmux is not installed",
)
def test_in_tmux_the_view_leaves_no_scrollback_and_the_screen_as_it_was() -> None:
    """The field notes' complaint: 242 lines of scrollback after 10 s of watch. In a real
    terminal multiplexer (80×24), watch draws on the alternate screen: while it runs the
    pane shows its frame, after ``q`` the shell's screen is back and the history did not
    grow."""
    socket = f"resguard-test-{os.getpid()}"
    session = "watch"
    _tmux(socket, "new-session", "-d", "-s", session, "-x", "80", "-y", "24", "sh")
    try:

        def pane(what: str) -> str:
            return _tmux(socket, "display-message", "-p", "-t", session, what).strip()

        history = pane("#{history_size}")
        command = f"cd {Path.cwd()} && {sys.executable} -m resguard watch --interval 0.1"
        _tmux(socket, "send-keys", "-t", session, command, "Enter")
        _poll(lambda: pane("#{alternate_on}") == "1", "watch to take the alternate screen")
        _poll(
            lambda: "sort by memory" in _tmux(socket, "capture-pane", "-p", "-t", session),
            "a frame with its footer",
        )
        screen = _tmux(socket, "capture-pane", "-p", "-t", session).splitlines()
        assert screen[0].startswith("resguard watch ")
        _tmux(socket, "send-keys", "-t", session, "q")
        _poll(lambda: pane("#{alternate_on}") == "0", "watch to give the screen back")
        assert pane("#{history_size}") == history
        after = _tmux(socket, "capture-pane", "-p", "-J", "-t", session)  # -J: wrapped lines joined
        assert "resguard watch " in after  # the command line typed, nothing more
        assert "verdict:" not in after
        assert pane("#{cursor_flag}") == "1"  # the cursor is shown again
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=10)


def test_an_error_inside_the_live_view_still_gives_the_terminal_back(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug while drawing (here the second frame fails): the command's one-line internal
    error, and before it the main screen, the cursor and the terminal's mode restored."""
    import resguard.cli._screen as screen_module
    import resguard.cli.watch as watch_module
    from resguard.cli import main

    master, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    before = termios.tcgetattr(secondary)
    keys = os.fdopen(os.dup(secondary), "r")
    out = os.fdopen(os.dup(secondary), "w")
    from resguard.cli._view import build_frame as real_build

    calls: list[int] = []

    def build_then_fail(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("a bug in the second frame")
        return real_build(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(watch_module, "build_frame", build_then_fail)
    monkeypatch.setattr(screen_module, "default_keys", lambda: keys)
    monkeypatch.setattr(screen_module, "colour_wanted", lambda out: False)
    try:
        code = main(["watch", "--interval", "0.05"], out)
        out.flush()
        written = b""
        while select.select([master], [], [], 0.05)[0]:
            written += os.read(master, 65536)
        assert code == 2
        assert "internal error: RuntimeError: a bug in the second frame" in capsys.readouterr().err
        assert written.startswith(ENTER)
        assert written.rstrip().endswith(ALT_OFF)
        assert termios.tcgetattr(secondary) == before
    finally:
        keys.close()
        out.close()
        os.close(master)
        os.close(secondary)


def test_a_resized_terminal_gets_a_frame_of_its_new_size_at_once(
    terminal: Callable[..., Terminal],
) -> None:
    term = terminal("--interval", "30", env={"NO_COLOR": "1"})  # no new period meanwhile
    term.first_frame()
    fcntl.ioctl(term.secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 16, 60, 0, 0))
    term.process.send_signal(signal.SIGWINCH)  # what the terminal sends its program
    term.read_until(lambda out: len(frames(out)) >= 2, "a frame after the resize")
    lines = _screen_lines(frames(term.output)[-1])
    os.write(term.master, b"q")
    assert term.exit_code() == 0
    assert len(lines) <= 16, lines
    assert all(cells(line) <= 60 for line in lines), lines
    assert lines[-1] == FOOTER
