"""Hosts, model names, keep-alives and the other arguments, checked with the value as typed."""

from __future__ import annotations

import ipaddress
import math
import os
import urllib.parse

from resguard._errors import InvalidType, InvalidValue
from resguard.units import named, parse_bytes, parse_duration

__all__ = [
    "DEFAULT_LOAD_TIMEOUT_S",
    "DEFAULT_MAX_ANSWER_BYTES",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT_S",
    "FOREVER_AFTER_S",
    "canonical",
    "keep_alive_s",
    "parse_host",
    "positive_bytes",
    "seconds",
    "wire_keep_alive",
]

FOREVER_AFTER_S = 20 * 365.25 * 86400.0  # the ollama CLI's "Forever" threshold
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_LOAD_TIMEOUT_S = 300.0
DEFAULT_MAX_ANSWER_BYTES = 8 * 1024 * 1024
DEFAULT_PORT = 11434


def seconds(value: object, what: str, *, zero: bool = False) -> float:
    """A duration argument: finite and above 0 (or 0 itself when *zero*), or
    InvalidValue/InvalidType quoting it."""
    parsed = named(what, parse_duration, value)
    if not math.isfinite(parsed) or parsed < 0 or (parsed == 0 and not zero):
        above = "at least 0" if zero else "above 0"
        raise InvalidValue(f"{what}={value!r} must be a finite duration {above} (e.g. 10, '30s')")
    return parsed


def positive_bytes(value: object, what: str) -> int:
    size = named(what, parse_bytes, value)
    if size <= 0:
        raise InvalidValue(f"{what}={value!r} must be above 0 bytes (e.g. '8MiB')")
    return size


def parse_host(host: str | None) -> str:
    """The server URL for *host* as the ``ollama`` client reads it (``None``: ``$OLLAMA_HOST``,
    else ``127.0.0.1:11434``; no scheme: ``http`` and port 11434; ``http://h``: port 80).

    Raises :class:`resguard.InvalidValue` quoting the host when it is not one (a bad port,
    an empty name, characters a host cannot have), instead of the client's ``ValueError``.
    """
    given = host
    if host is None:
        host = os.environ.get("OLLAMA_HOST") or None
        where = f"OLLAMA_HOST={host!r}"
    else:
        where = f"host {host!r}"
    if host is None:
        return f"http://127.0.0.1:{DEFAULT_PORT}"
    if not isinstance(host, str):
        raise InvalidType(f"host={given!r} must be a string such as 'http://127.0.0.1:11434'")
    hint = "expected e.g. 'http://127.0.0.1:11434', '127.0.0.1:11434' or 'localhost'"
    scheme, split, default_port = _split(host.strip(), where, hint)
    name, port = split.hostname, split.port
    if port is None and split.netloc.endswith(":"):
        raise InvalidValue(f"{where} has an empty port; {hint}")
    if split.query or split.fragment or split.username or split.password:
        raise InvalidValue(f"{where} may not have a query, fragment or user; {hint}")
    if not name:
        if not split.netloc.startswith(":"):
            raise InvalidValue(f"{where} names no host; {hint}")
        name = "127.0.0.1"
    if port is not None and not 1 <= port <= 65535:
        raise InvalidValue(f"{where} has port {port}, outside 1-65535; {hint}")
    if "[" in split.netloc:
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            raise InvalidValue(f"{where}: {name!r} is not an IPv6 address; {hint}") from None
        shown_name = f"[{name}]"
    else:
        if not all(c.isascii() and (c.isalnum() or c in "-._") for c in name):
            raise InvalidValue(f"{where}: {name!r} is not a host name; {hint}")
        shown_name = name
    path = split.path.rstrip("/")
    return f"{scheme}://{shown_name}:{port or default_port}{path}"


def _split(text: str, where: str, hint: str) -> tuple[str, urllib.parse.SplitResult, int]:
    """The scheme, the parsed URL and the scheme's default port of a host text."""
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise InvalidValue(f"{where} is not an Ollama host; {hint}")
    scheme, _, rest = text.partition("://")
    if not rest:
        scheme, rest = "http", text
        default_port = DEFAULT_PORT
    else:
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise InvalidValue(f"{where} has scheme {scheme!r}; Ollama speaks http or https")
        default_port = 443 if scheme == "https" else 80
    try:
        split = urllib.parse.urlsplit(f"{scheme}://{rest}")
        split.hostname, split.port  # noqa: B018 - both raise ValueError for a bad netloc
    except ValueError as error:
        raise InvalidValue(f"{where} is not an Ollama host ({error}); {hint}") from None
    return scheme, split, default_port


def canonical(name: str) -> str:
    """Ollama's display form of a model name: lower case with a tag (``llama3.2:latest``)."""
    if not isinstance(name, str):
        raise InvalidType(f"{name!r} is not an Ollama model name; expected e.g. 'llama3.2:3b'")
    key = name.strip().lower()
    # whitespace or an unprintable character; the only printable whitespace is " " (this
    # runs twice per ensure(), so in C rather than a loop over the characters)
    if not key or not key.isprintable() or " " in key:
        raise InvalidValue(f"{name!r} is not an Ollama model name; expected e.g. 'llama3.2:3b'")
    for prefix in ("registry.ollama.ai/library/", "library/"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    if ":" not in key.rsplit("/", 1)[-1]:
        key += ":latest"
    return key


def keep_alive_s(value: object, what: str = "keep_alive") -> float | None:
    """Seconds (``math.inf`` = forever) from a keep-alive given as seconds or ``"5m"``;
    a negative one means forever, as in Ollama."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return math.inf
    forever = isinstance(value, str) and value.strip().startswith("-")
    try:
        parsed = parse_duration(value.strip()[1:] if forever else value)  # type: ignore
    except (InvalidValue, InvalidType) as error:
        if forever:
            raise InvalidValue(f"{what}={value!r} is not a duration such as '-1', '5m'") from None
        raise type(error)(f"{what}: {error}") from None
    if math.isnan(parsed):
        raise InvalidValue(f"{what}={value!r} is not a duration")
    return math.inf if forever else parsed


def wire_keep_alive(value_s: float | None) -> float | None:
    """A keep-alive as the client sends it (``-1`` for forever)."""
    if value_s is None:
        return None
    return -1.0 if math.isinf(value_s) else value_s
