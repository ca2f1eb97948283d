"""A guard's arguments, checked before anything is kept: a bad one leaves no guard, and its
error names the argument as it was passed (``memory='90%%': ...``)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import attrs

from resguard._errors import InvalidType, InvalidValue, ResguardError
from resguard._modules.clock import Clock, monotonic
from resguard._modules.clockcheck import checked_clock
from resguard.guard._core import Limits, OnUnknown
from resguard.rules import Level
from resguard.units import Amount, parse_bytes, parse_duration, shown

if TYPE_CHECKING:
    from resguard.monitor import Monitor

__all__ = [
    "OnBreach",
    "OnUnknown",
    "Reserve",
    "Settings",
    "VramAmount",
    "amount_argument",
    "check_duration",
    "check_held",
    "check_monitor",
    "check_on_breach",
    "check_reserve",
    "clock_of",
    "named_argument",
    "settings",
]

Reserve = int | float | str | None
OnBreach = Literal["cancel"] | None


def named_argument(what: str, parse: Callable[[Any], Any], value: Any) -> Any:
    """``parse(value)``, with ``what=value:`` put in front of any error's message."""
    try:
        return parse(value)
    except ResguardError as error:
        error.args = (f"{what}={shown(value)}: {error}",)
        raise


def check_duration(value: object, what: str) -> float:
    """A finite duration in seconds (``"2s"``, ``0.5``) for the argument *what*."""
    seconds: float = named_argument(what, parse_duration, value)
    if not math.isfinite(seconds):
        raise InvalidValue(f"{what}={shown(value)} must be a finite duration, e.g. '2s'")
    return seconds


def check_reserve(value: object, what: str = "reserve") -> int:
    """A reservation in bytes (``None`` and ``"auto"`` are the caller's to handle)."""
    return int(named_argument(what, parse_bytes, value))


def check_held(held_s: object) -> None:
    """*held_s* for :meth:`Guard.release`: seconds the call held its admission."""
    if isinstance(held_s, bool) or not isinstance(held_s, (int, float)):
        raise InvalidType(
            f"held_s={shown(held_s)} is not a number of seconds; expected e.g. 0.25 or None"
        )
    try:
        ok = 0 <= float(held_s) < math.inf
    except OverflowError:  # 10**400
        ok = False
    if not ok:
        raise InvalidValue(
            f"held_s={shown(held_s)} is not a finite number of seconds >= 0; "
            "expected e.g. 0.25 or None"
        )


def check_on_breach(on_breach: object) -> None:
    """``None`` or ``"cancel"``."""
    if on_breach is not None and (not isinstance(on_breach, str) or on_breach != "cancel"):
        raise InvalidValue(f"on_breach={shown(on_breach)}; expected None or 'cancel'")


@attrs.frozen
class Settings:
    """A guard's checked arguments: its :class:`Limits` and how it admits."""

    limits: Limits
    auto: bool
    reserve_bytes: int
    wait_s: float
    max_age_s: float
    on_breach: OnBreach
    name: str
    monitor: Monitor | None
    clock: Clock
    clock_given: bool = False  # False: the clock is the monitor's (or monotonic)


class VramAmount(Amount):
    """A guard's ``vram``: an :class:`~resguard.units.Amount` whose share is of the GPU's
    memory, which is how it reads (``"90% of the GPU's memory"``), not of the limit."""

    __slots__ = ()

    def __str__(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}% of the GPU's memory"
        return super().__str__()

    def __reduce__(self) -> tuple[Callable[..., Amount], tuple[object]]:
        return (VramAmount, (self.typed,))  # a guard's vram is above zero


def _unitless(value: object) -> bool:
    """Whether *value* is a number that names no unit: a string of digits (``"90"``) or a
    fraction of a byte (``1.5``). A size needs a unit; only whole bytes may be given bare."""
    if isinstance(value, float):
        return not value.is_integer()
    if isinstance(value, str):
        try:
            float(value.strip().replace("_", ""))
        except ValueError:
            return False
        return True
    return False


def amount_argument(what: str, value: object) -> Amount:
    """A size or a share of the limit above zero for the argument *what*, refused with the
    guard's own wording (Amount's would quote the value twice and speak of refusing).

    A number with no unit (``"90"``, ``1.5``) is refused: ``"90"`` read as 90 bytes would
    refuse everything where ``"90%"`` was meant, and 1.5 bytes is no size. Whole bytes may
    be given as an int (``2**30``)."""
    of = "of the GPU's memory" if what == "vram" else "of the effective memory limit"
    if _unitless(value):
        raise InvalidValue(
            f"{what}={shown(value)} has no unit; expected a size such as '20GiB', whole "
            f"bytes as an int, or a share {of} such as '90%'"
        )
    make = VramAmount if what == "vram" else Amount
    amount: Amount = named_argument(what, functools.partial(make, positive=False), value)
    if amount.percent is not None and not amount.percent > 0:
        raise InvalidValue(
            f"{what}={shown(value)} must be above 0% (it would refuse everything); "
            f"expected a share {of} such as '90%'"
        )
    if amount.bytes is not None and amount.bytes <= 0:
        raise InvalidValue(
            f"{what}={shown(value)} must be above zero; expected e.g. '20GiB' or '90%'"
        )
    return amount


def _amount(value: object, what: str) -> Amount | None:
    """A size or a share of the limit above zero (a bound of zero would refuse everything)."""
    return None if value is None else amount_argument(what, value)


def _check_level(level: object) -> Level | None:
    if level is not None and not isinstance(level, Level):
        raise InvalidType(
            f"level={shown(level)} is not a resguard.Level; expected e.g. Level.CRITICAL or None"
        )
    return level


def _check_max_concurrent(max_concurrent: object) -> int | None:
    if max_concurrent is None:
        return None
    if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
        raise InvalidType(
            f"max_concurrent={shown(max_concurrent)} is not a whole number; "
            f"expected a number >= 1 or None"
        )
    if max_concurrent < 1:
        raise InvalidValue(
            f"max_concurrent={shown(max_concurrent)} must be >= 1 (or None for no limit)"
        )
    return max_concurrent


def _check_on_unknown(on_unknown: object) -> OnUnknown:
    if on_unknown == "admit" and isinstance(on_unknown, str):
        return "admit"
    if on_unknown == "refuse" and isinstance(on_unknown, str):
        return "refuse"
    raise InvalidValue(f"on_unknown={shown(on_unknown)}; expected 'admit' or 'refuse'")


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidType(f"name={shown(name)} is not a string; expected e.g. 'api'")
    if not name:
        raise InvalidValue("name='' is empty; expected e.g. 'api'")
    return name


def check_monitor(monitor: object) -> Monitor | None:
    if monitor is None:
        return None
    from resguard.monitor import Monitor

    if not isinstance(monitor, Monitor):
        raise InvalidType(
            f"monitor={shown(monitor)} is not a resguard.Monitor; expected a Monitor or None"
        )
    return monitor


def clock_of(clock: object, monitor: Monitor | None) -> Clock:
    """The clock given, else the monitor's (its states' ages are on it), else monotonic."""
    if clock is not None:
        return checked_clock(clock)
    own = getattr(monitor, "clock", None) if monitor is not None else None
    return own if callable(own) else monotonic


def settings(
    memory: object,
    rss: object,
    level: object,
    max_concurrent: object,
    reserve: object,
    wait: object,
    *,
    monitor: object,
    max_age: object,
    retry_after: object,
    on_breach: object,
    on_unknown: object,
    name: object,
    clock: object,
    vram: object = None,
) -> Settings:
    """Check every argument of :class:`~resguard.guard.Guard`, in the order given."""
    memory_limit, rss_limit = _amount(memory, "memory"), _amount(rss, "rss")
    vram_limit = _amount(vram, "vram")
    checked_level = _check_level(level)
    limit = _check_max_concurrent(max_concurrent)
    auto = isinstance(reserve, str) and reserve == "auto"
    reserve_bytes = 0 if reserve is None or auto else check_reserve(reserve)
    wait_s = check_duration(wait, "wait") if wait is not None else 0.0
    max_age_s = check_duration(max_age, "max_age")
    retry_after_s = check_duration(retry_after, "retry_after")
    check_on_breach(on_breach)
    answer = _check_on_unknown(on_unknown)
    checked_name = _check_name(name)
    checked_monitor = check_monitor(monitor)
    limits = Limits(
        memory_limit, rss_limit, checked_level, limit, answer, retry_after_s, vram_limit
    )
    return Settings(
        limits,
        auto,
        reserve_bytes,
        wait_s,
        max_age_s,
        on_breach,  # type: ignore[arg-type]  # checked above
        checked_name,
        checked_monitor,
        clock_of(clock, checked_monitor),
        clock is not None,
    )
