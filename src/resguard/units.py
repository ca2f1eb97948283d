"""Sizes, durations and percentages as people type them.

Sizes
    ``1024``, ``"512MiB"``, ``"2GB"``, ``"2g"``, ``"1.5 GiB"``, ``"512Mi"``, ``"1e9"``,
    ``"kB"`` (a bare unit means one of it). Suffixes with an ``i`` are binary (IEC:
    ``KiB`` = 2¹⁰ … ``EiB`` = 2⁶⁰); suffixes ending in ``B`` are decimal (SI: ``kB``/``KB`` =
    10³, ``GB`` = 10⁹ … ``EB`` = 10¹⁸), as in Kubernetes, dask and humanfriendly. A bare
    letter (``k``, ``m``, ``g``, ``t``, ``p``, ``e``, either case) is **binary**, as Docker
    (``--memory 2g``) and the JVM (``-Xmx2g``) read it. Units are case-insensitive
    (``b``/``B`` alone is bytes). Integers stay exact (``10**17 + 1`` is not rounded
    through a float); a size above :data:`MAX_BYTES` (2⁶⁴ bytes, 16 EiB) is rejected.
Durations
    Go style ``"1h30m"``, ``"250ms"``, ``"1.5s"``, ``"2d"``; a plain number (or numeric
    string) is seconds; a :class:`datetime.timedelta` is accepted. A duration above
    :data:`MAX_SECONDS` (about 292 years, the longest wait Python allows) is rejected.
Percentages
    ``"85%"`` or ``85.0`` (0–100), resolved against an effective limit by
    :func:`resolve_bytes`.

Every rejection is an :class:`~resguard.InvalidValue` (a ``ValueError``) or
:class:`~resguard.InvalidType` (a ``TypeError``) whose message quotes the value as it was
passed and names the accepted forms; no input raises anything else (not ``OverflowError``
for ``10**400``, and ``"1e999"`` is quoted as typed, not as ``inf``).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import functools
import math
import re
import threading
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Final, TypeVar

from resguard._errors import InvalidType, InvalidValue

__all__ = [
    "MAX_BYTES",
    "MAX_SECONDS",
    "Amount",
    "format_bytes",
    "format_duration",
    "format_size",
    "parse_bytes",
    "parse_duration",
    "parse_percent",
    "resolve_bytes",
]

MAX_BYTES: Final = 2**64
"""The largest size accepted (16 EiB, more than a 64-bit machine can address)."""

MAX_SECONDS: Final = float(threading.TIMEOUT_MAX)
"""The longest duration accepted: the longest wait Python allows (about 292 years on Linux)."""

_SIZE_HINT: Final = 'expected e.g. "512MiB", "2GB", "2g" or a number of bytes'
_DURATION_HINT: Final = 'expected e.g. "250ms", "30s", "1h30m" or a number of seconds'
_PERCENT_HINT: Final = 'expected e.g. "85%" or a number from 0 to 100'

_SIZE_UNITS: Final[dict[str, int]] = {
    "": 1,
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "eb": 10**18,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
    "eib": 2**60,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
    "pi": 2**50,
    "ei": 2**60,
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
    "t": 2**40,
    "p": 2**50,
    "e": 2**60,
}
_NUMBER: Final = r"[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+\."
_SIZE_RE: Final = re.compile(rf"\s*(?P<num>{_NUMBER})?\s*(?P<unit>[A-Za-z]*)\s*")

_DURATION_UNITS: Final[dict[str, float]] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION_PART: Final = re.compile(rf"({_NUMBER})(ns|us|µs|μs|ms|s|m|h|d)")
_PLAIN_NUMBER: Final = re.compile(rf"\s*(?:{_NUMBER})\s*")
# exact decimal arithmetic for sizes typed as text: enough digits for any size up to
# MAX_BYTES with a fraction, and exponents far beyond it stay cheap (checked before use)
_EXACT: Final = decimal.Context(
    prec=60, rounding=decimal.ROUND_HALF_EVEN, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN
)


_T = TypeVar("_T")


def named(what: str, parse: Callable[[Any], _T], value: object) -> _T:
    """``parse(value)`` for the argument *what*: an error's message starts with its name
    (``"timeout: 'soon' is not a duration; ..."``), its type (InvalidValue/InvalidType)
    kept."""
    try:
        return parse(value)
    except (InvalidValue, InvalidType) as error:
        raise type(error)(f"{what}: {error}") from None


def shown(value: object) -> str:
    """``repr(value)`` for messages, safe for integers too long to print and for objects
    whose ``__repr__`` raises (the error about them must still be the one raised)."""
    try:
        return repr(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        if isinstance(value, int):
            return f"<an integer of {value.bit_length()} bits>"
        return f"<a {type(value).__qualname__} that cannot be shown>"
    except Exception:
        return f"<a {type(value).__qualname__} that cannot be shown>"


def _check_number(value: object, what: str, hint: str, maximum: float | None = None) -> int | float:
    """Return *value* (an int stays an exact int) if it is a finite number from 0 to
    *maximum*, or raise naming it as passed."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidType(f"{shown(value)} is not {what}; {hint}")
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise InvalidValue(f"{value!r} is not {what}; {hint}")
    if value < 0:
        raise InvalidValue(f"{shown(value)} is not {what}: it is negative; {hint}")
    if maximum is not None and value > maximum:
        raise InvalidValue(f"{shown(value)} is not {what}: too large; {hint}")
    return value


def parse_bytes(value: int | float | str) -> int:
    """Return *value* as a whole number of bytes (see the module docstring for the forms)."""
    if not isinstance(value, str):
        return round(_check_number(value, "a size", _SIZE_HINT, MAX_BYTES))
    match = _SIZE_RE.fullmatch(value)
    if match is None or (match["num"] is None and not match["unit"]):
        raise InvalidValue(f"{value!r} is not a size; {_SIZE_HINT}")
    unit = match["unit"]
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise InvalidValue(f"{value!r} is not a size: unknown unit {unit!r}; {_SIZE_HINT}")
    number = decimal.Decimal(match["num"]) if match["num"] is not None else decimal.Decimal(1)
    if number.adjusted() > 30:  # checked before any arithmetic: "1e999999999" stays cheap
        raise InvalidValue(f"{value!r} is not a size: too large; {_SIZE_HINT}")
    result = int(_EXACT.multiply(number, factor).to_integral_value(context=_EXACT))
    if result > MAX_BYTES:
        raise InvalidValue(f"{value!r} is not a size: too large; {_SIZE_HINT}")
    return result


_BINARY_STEPS: Final = (
    ("EiB", 2**60),
    ("PiB", 2**50),
    ("TiB", 2**40),
    ("GiB", 2**30),
    ("MiB", 2**20),
    ("KiB", 2**10),
)
_DECIMAL_STEPS: Final = (
    ("EB", 10**18),
    ("PB", 10**15),
    ("TB", 10**12),
    ("GB", 10**9),
    ("MB", 10**6),
    ("kB", 10**3),
)


def format_bytes(n_bytes: int | float, *, binary: bool = True, precision: int = 1) -> str:
    """Format a byte count for people: ``1.5 GiB`` (or ``1.6 GB`` with ``binary=False``).

    Negative values (a shrinking delta) keep their sign. The result parses back with
    :func:`parse_bytes` to within the rounding of *precision* digits (for sizes up to
    :data:`MAX_BYTES`); any integer, however large, is formatted without error.
    """
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, (int, float)):
        raise InvalidType(f"{shown(n_bytes)} is not a number of bytes")
    if isinstance(n_bytes, float) and (math.isnan(n_bytes) or math.isinf(n_bytes)):
        raise InvalidValue(f"{n_bytes!r} is not a number of bytes")
    if isinstance(precision, bool) or not isinstance(precision, int) or not 0 <= precision <= 20:
        raise InvalidValue(f"precision={precision!r} is not a number of digits from 0 to 20")
    sign = "-" if n_bytes < 0 else ""
    magnitude = abs(n_bytes)
    for unit, factor in _BINARY_STEPS if binary else _DECIMAL_STEPS:
        if magnitude >= factor:
            if magnitude > MAX_BYTES:  # an exponent, not a wall of digits (ints beyond floats)
                scaled = decimal.Decimal(magnitude) / factor
                return f"{sign}{scaled:.{precision}e} {unit}"
            return f"{sign}{magnitude / factor:.{precision}f} {unit}"
    return f"{sign}{round(magnitude)} B"


def format_size(n_bytes: int | float | None, *, unknown: str = "unknown") -> str:
    """A measured size as resguard shows it to people, everywhere (printouts, reprs,
    notebook tables, messages): IEC units (``190.8 MiB``, ``1.5 GiB``), *unknown* for
    ``None`` (a figure that could not be read is never shown as 0).

    Unlike :func:`format_bytes` it never raises for a number: a NaN or infinite figure a
    hostile source produced is shown as it is, since a repr or a log line must not fail.
    A size the user typed (``growth="50MB"``) may be echoed as typed instead.
    """
    if n_bytes is None:
        return unknown
    if isinstance(n_bytes, float) and not math.isfinite(n_bytes):
        return repr(n_bytes)
    if isinstance(n_bytes, bool) or not isinstance(n_bytes, (int, float)):
        return shown(n_bytes)
    return format_bytes(n_bytes)


def parse_duration(value: int | float | str | _dt.timedelta) -> float:
    """Return *value* as seconds (float); see the module docstring for the forms."""
    if isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
        if seconds < 0 or seconds > MAX_SECONDS:
            raise InvalidValue(
                f"{value!r} is not a duration: "
                f"{'negative' if seconds < 0 else 'too large'}; {_DURATION_HINT}"
            )
        return seconds
    if not isinstance(value, str):
        return float(_check_number(value, "a duration", _DURATION_HINT, MAX_SECONDS))
    text = value.strip()
    if _PLAIN_NUMBER.fullmatch(text):
        total = float(text)
    else:
        position, total = 0, 0.0
        for part in _DURATION_PART.finditer(text):
            if part.start() != position:
                break
            total += float(part[1]) * _DURATION_UNITS[part[2]]
            position = part.end()
        if position != len(text) or not text:
            # "-1s": the one reason worth giving (a duration is never negative)
            negative = text.startswith("-") and _unsigned_duration(text[1:].lstrip())
            because = ": it is negative" if negative else ""
            raise InvalidValue(f"{value!r} is not a duration{because}; {_DURATION_HINT}")
    if not total <= MAX_SECONDS:  # "1e999" is inf: quoted as typed
        raise InvalidValue(f"{value!r} is not a duration: too large; {_DURATION_HINT}")
    return total


def _unsigned_duration(text: str) -> bool:
    """Whether *text* reads as a duration (no sign)."""
    try:
        parse_duration(text)
    except InvalidValue:
        return False
    return bool(text) and not text.startswith("-")


def format_duration(seconds: float) -> str:
    """Format seconds for people: ``250ms``, ``42s``, ``5m30s``, ``2h05m``; any finite
    number of at least 0, however large."""
    seconds = _check_number(seconds, "a duration", _DURATION_HINT)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours > 10**9:  # centuries: digits, not a wall of them
        return f"{decimal.Decimal(hours):.3e}h"
    return f"{hours}h{minutes:02d}m"


def parse_percent(value: int | float | str) -> float:
    """Return a percentage from 0 to 100: ``"85%"``, ``"85"`` or ``85.0``."""
    number: int | float
    if isinstance(value, str):
        text = value.strip()
        number_text = text[:-1] if text.endswith("%") else text
        if not _PLAIN_NUMBER.fullmatch(number_text):
            raise InvalidValue(f"{value!r} is not a percentage; {_PERCENT_HINT}")
        number = float(number_text.strip())  # float() strips less whitespace than \s matches
    else:
        number = _check_number(value, "a percentage", _PERCENT_HINT)
    if not 0 <= number <= 100:
        raise InvalidValue(f"{shown(value)} is not a percentage; {_PERCENT_HINT}")
    return float(number)


def is_plain_number(text: str) -> bool:
    """Tell whether *text* is a plain non-negative number as the parsers here read one
    (``"85"``, ``" 0.5 "``, ``"1e3"``, ``"5."``), without a unit or a sign."""
    return _PLAIN_NUMBER.fullmatch(text) is not None


def is_percent(value: object) -> bool:
    """Tell whether *value* is written as a percentage (a string ending in ``%``)."""
    return isinstance(value, str) and value.strip().endswith("%")


def resolve_bytes(value: int | float | str, limit_bytes: int) -> int:
    """Return *value* in bytes, reading ``"85%"`` as a share of *limit_bytes* (a known
    number of bytes: ``None``, an unknown limit, is an :class:`~resguard.InvalidType`)."""
    if is_percent(value):
        assert isinstance(value, str)
        percent = parse_percent(value)
        limit = _check_number(
            limit_bytes, "a limit in bytes", "expected the number of bytes the percentage is of"
        )
        return round(Fraction(percent) * Fraction(limit) / 100)
    return parse_bytes(value)


_AMOUNT_HINT: Final = (
    'expected bytes, a size such as "512MiB" or a share of the memory limit such as "50%"'
)


class Amount:
    """An amount of memory as people give it: bytes (``2**30``, ``"512MiB"``) or a share
    of an effective limit (``"50%"``).

    One meaning everywhere (rules, guards, pools, budgets): a share is resolved against the
    limit *current when it is used* (:meth:`resolve`), never frozen at construction, so a
    ``"50%"`` budget follows a container whose limit is raised. Values are immutable,
    hashable and compare by what they mean (``Amount("1KiB") == Amount(1024)``).
    """

    __slots__ = ("_fraction", "bytes", "percent", "typed")

    bytes: int | None
    """The fixed amount in bytes; ``None`` for a share."""
    percent: float | None
    """The share of the limit, 0–100; ``None`` for a fixed amount."""
    typed: object
    """The value as it was given (quoted in messages)."""
    _fraction: float | None

    def __init__(self, value: int | float | str | Amount, *, positive: bool = True) -> None:
        """Parse *value*; with *positive* (the default) zero bytes and 0 % are refused, as
        an amount that would refuse everything is a typo."""
        if not isinstance(positive, bool):
            raise InvalidType(f"positive={shown(positive)} is not a bool")
        if isinstance(value, Amount):
            fixed, percent, typed = value.bytes, value.percent, value.typed
        elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise InvalidType(f"{shown(value)} is not an amount of memory; {_AMOUNT_HINT}")
        elif is_percent(value):
            fixed, percent, typed = None, parse_percent(value), value
        else:
            fixed, percent, typed = parse_bytes(value), None, value
        if positive and (fixed == 0 or percent == 0):
            raise InvalidValue(
                f"{shown(typed)} must be above zero (it would refuse everything); {_AMOUNT_HINT}"
            )
        object.__setattr__(self, "bytes", fixed)
        object.__setattr__(self, "percent", percent)
        object.__setattr__(self, "typed", typed)
        object.__setattr__(self, "_fraction", None if percent is None else percent / 100)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Amount is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Amount is immutable; cannot delete {name!r}")

    @property
    def is_share(self) -> bool:
        """Whether this is a share of a limit (``"50%"``) rather than fixed bytes."""
        return self.percent is not None

    def resolve(self, limit_bytes: int | float | None) -> int | None:
        """The amount in bytes against *limit_bytes*, the limit as it is now; ``None`` when
        this is a share of a limit that is unknown (``None``)."""
        if self._fraction is None:
            return self.bytes
        if limit_bytes is None:
            return None
        return int(self._fraction * limit_bytes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Amount):
            return NotImplemented
        return (self.bytes, self.percent) == (other.bytes, other.percent)

    def __hash__(self) -> int:
        return hash((Amount, self.bytes, self.percent))

    def __repr__(self) -> str:
        return f"Amount({shown(self.typed)})"

    def __str__(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}% of the limit"
        assert self.bytes is not None
        return format_bytes(self.bytes)

    def __reduce__(self) -> tuple[Callable[..., Amount], tuple[object]]:
        if self.bytes == 0 or self.percent == 0:  # made with positive=False: it stays valid
            return (functools.partial(Amount, positive=False), (self.typed,))
        return (Amount, (self.typed,))
