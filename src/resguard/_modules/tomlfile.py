"""Finding and reading resguard's TOML configuration, shared by budgets and the guardian:
one search (``--config``, then ``resguard.toml`` or a marked ``pyproject.toml`` here or
above, then the user config directory) and one careful reader (size-capped, UTF-8, every
failure a :class:`~resguard.ConfigError` naming the file)."""

from __future__ import annotations

import difflib
import os
import re
import stat
import sys
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from resguard._errors import ConfigError, InvalidType, InvalidValue
from resguard._modules.log import get_logger
from resguard.units import format_bytes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "Wants",
    "check_keys",
    "has_tool_resguard",
    "read_toml",
    "search_config",
    "user_config_file",
]

_DEFAULT_FILES = ("resguard.toml", "pyproject.toml")
_logger = get_logger("resguard")
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
_MAX_CONFIG_BYTES = 1 << 20
_DEEP_DOTTED_KEY = re.compile(r"""(?:(?:[\w-]+|"[^"\n]*"|'[^'\n]*')[ \t]*\.[ \t]*){99,}""")


def _platformdirs_config_dir() -> str | None:
    """platformdirs' config directory for resguard, ``None`` where it is not installed."""
    try:
        import platformdirs
    except ImportError:
        return None
    return str(platformdirs.user_config_dir("resguard"))


def user_config_file() -> Path | None:
    """``resguard.toml`` in the user's config directory: platformdirs'
    ``user_config_dir("resguard")`` when platformdirs is importable, else
    ``$XDG_CONFIG_HOME/resguard`` (default ``~/.config/resguard``), and on macOS
    ``~/Library/Application Support/resguard``. ``None`` where no home directory is known."""
    try:
        found = _platformdirs_config_dir()
        if found is not None:
            return Path(found) / "resguard.toml"
        if sys.platform == "darwin":
            base = Path.home() / "Library" / "Application Support"
        else:
            base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    except (RuntimeError, KeyError, OSError):  # no HOME and no passwd entry
        return None
    return base / "resguard" / "resguard.toml"


def _readable_file(candidate: Path) -> bool:
    try:
        return candidate.is_file()
    except OSError:  # a name too long, a loop of links: nothing to read there
        return False


Wants = Callable[[Mapping[str, Any]], bool]
"""What a search looks for in a file's parsed TOML (``True``: this file is the one)."""


def has_tool_resguard(data: Mapping[str, Any]) -> bool:
    """Whether parsed TOML has a ``[tool.resguard]`` table (in any TOML spelling)."""
    tool = data.get("tool")
    return isinstance(tool, Mapping) and "resguard" in tool


def _holds(candidate: Path, wants: Wants | None) -> bool:
    """Whether *candidate* is a readable file whose parsed TOML *wants* accepts (any file
    for ``None``). A ``resguard.toml`` that cannot be read or parsed is found
    (:func:`read_toml` then says what is wrong with it), and so is a ``pyproject.toml``
    that names resguard anywhere: a broken configuration is never passed over silently. A
    broken ``pyproject.toml`` that never names resguard is another project's file: passed
    over, with a warning that says why."""
    if not _readable_file(candidate):
        return False
    if wants is None:
        return True
    try:
        data, _ = read_toml(candidate, noun="a configuration")
    except ConfigError as error:
        if candidate.name != "pyproject.toml" or _names_resguard(candidate):
            return True
        _logger.warning(
            "%s; passed over in the search for resguard's configuration (it names no resguard)",
            error,
        )
        return False
    return wants(data)


def _names_resguard(candidate: Path) -> bool:
    """Whether the first MiB of *candidate* holds ``resguard`` (``True`` when unreadable:
    then it is for :func:`read_toml` to say why)."""
    try:
        raw = _read_regular(candidate)
    except OSError:
        return True
    return isinstance(raw, str) or b"resguard" in raw.lower()


def search_config(
    start: str | os.PathLike[str] | None = None,
    *,
    pyproject_wants: Wants = has_tool_resguard,
    file_wants: Wants | None = None,
    caller: str = "search_config",
) -> Path | None:
    """The configuration file both budgets and the guardian read: ``resguard.toml`` (one
    whose parsed TOML *file_wants* accepts, when given), else a ``pyproject.toml`` that
    *pyproject_wants* accepts, in *start* (default the working directory) or the nearest
    directory above it; else :func:`user_config_file` (accepted by *file_wants*) when it
    exists. Files are judged by their parsed tables, never by the bytes they hold (a
    comment naming a table is not the table). ``None`` when there is none. A bad *start*
    is an error naming *caller* (the public function the user called)."""
    if start is not None and not isinstance(start, (str, os.PathLike)):
        raise InvalidType(f"{caller}({start!r}): expected a directory path or None")
    if start is not None and "\x00" in os.fsdecode(start):
        raise InvalidValue(f"{caller}({start!r}): a path cannot hold a NUL character")
    markers = {"resguard.toml": file_wants, "pyproject.toml": pyproject_wants}
    here = Path(start or os.getcwd()).resolve()
    for directory in (here, *here.parents):
        for name in _DEFAULT_FILES:
            if _holds(directory / name, markers[name]):
                return directory / name
    user = user_config_file()
    return user if user is not None and _holds(user, file_wants) else None


def read_toml(path: str | os.PathLike[str], *, noun: str) -> tuple[dict[str, Any], str]:
    """The parsed TOML of *path* and its name as shown in errors; *noun* (``"a budget
    file"``) says in an error what such a file normally holds."""
    shown = os.fsdecode(path)
    if "\x00" in shown:
        raise ConfigError(f"{shown!r}: a path cannot hold a NUL character", path=shown)
    try:
        raw = _read_regular(path)
        if isinstance(raw, str):
            raise ConfigError(f"{shown}: cannot be read ({raw})", path=shown)
        if len(raw) > _MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{shown}: larger than {format_bytes(_MAX_CONFIG_BYTES)}; {noun} is a few tables",
                path=shown,
            )
        text = raw.decode("utf-8")
        if _DEEP_DOTTED_KEY.search(text):  # tomllib needs memory quadratic in a key's length
            raise ConfigError(
                f"{shown}: a dotted key of 100 parts or more; {noun} needs a few", path=shown
            )
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such file", path=shown) from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot be read ({exc})", path=shown) from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; tomllib lets the decoding error out
        raise ConfigError(
            f"{shown}: not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r}"
            f" at offset {exc.start}); TOML files are UTF-8",
            path=shown,
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: not valid TOML ({exc})", path=shown) from None
    except RecursionError:
        raise ConfigError(
            f"{shown}: arrays or tables nested too deeply to read", path=shown
        ) from None
    return data, shown


def _read_regular(path: str | os.PathLike[str]) -> bytes | str:
    """At most 1 MiB + 1 byte of *path*, opened without blocking and read only when it is a
    regular file (else why not): a FIFO with no writer (or a device) named as the
    configuration cannot hang the reader."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            return "it is a directory"
        if not stat.S_ISREG(mode):
            return "not a regular file: only one is read, never a FIFO or a device"
        chunks = []
        left = _MAX_CONFIG_BYTES + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def check_keys(path: str, prefix: str, table: Mapping[str, Any], known: Collection[str]) -> None:
    """Raise a :class:`~resguard.ConfigError` for the first key of *table* (the table
    *prefix* of the file *path*) that is not one of *known*, with the closest known key as
    a hint (``did you mean 'for'?``) and the list of known keys."""
    ordered = sorted(known)
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(str(key), ordered, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            value = table[key]
            raise ConfigError(
                f"{path}: {prefix}.{key} = {value!r}: unknown key {key!r}{hint} "
                f"(known: {', '.join(ordered)})",
                path=path,
                key=f"{prefix}.{key}",
                value=value,
            )
