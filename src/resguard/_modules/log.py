"""The ``resguard`` logger: visible while nobody configured logging, routed once they do.

A server started as ``uvicorn app:app`` configures handlers for uvicorn's loggers only; a
library logger with a NullHandler (what the logging HOWTO suggests) is then silent, and an
operator sees nothing of a level change or a model unloaded. So the ``resguard`` logger
carries :class:`DefaultHandler`: INFO and above, one short line each on ``sys.stderr``,
only while the root logger has no handler and ``resguard`` has no other one. Once anything
configures logging (``basicConfig``, ``dictConfig``, uvicorn's ``--log-config``, pytest's
caplog, ``resguard watch`` holding lines off its screen) it writes nothing and the records
reach the configured handlers once, by propagation.

The logger's level is INFO unless someone set one: ``logging.getLogger("resguard")
.setLevel(logging.WARNING)`` keeps only warnings. Records carry structured fields in
``extra``, every name prefixed ``resguard_`` (:func:`fields`), for JSON formatters.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final

from resguard._errors import InvalidValue

__all__ = [
    "DEFAULT_HANDLER",
    "FIELD_NAMES",
    "PREFIX",
    "DefaultHandler",
    "RefusalLog",
    "emit",
    "fields",
    "flush_due_refusals",
    "flush_refusals",
    "get_logger",
    "handler_failed",
    "set_default_level",
    "verdict_fields",
]

PREFIX: Final = "resguard_"

#: The names of the structured fields (without :data:`PREFIX`) a record's ``extra`` may
#: carry: one vocabulary for every call site.
FIELD_NAMES: Final = frozenset(
    {
        "event",  # what happened: level_change, reclaim_step, reclaim, model_unload, ...
        "level",  # a verdict level's name: "OK", "WARNING", "CRITICAL"
        "previous_level",
        "rule",  # the first breach's rule, or None
        "rules",  # every breaching rule's name
        "culprits",  # the offenders' labels, "1234 python"
        "freed_bytes",  # measured; None when it could not be measured
        "claimed_bytes",  # what a step said it freed
        "target_bytes",
        "step",
        "model",
        "pool",
        "cache",
        "evicted",
        "guard",
        "refused",
        "refused_by_reason",
        "interval_s",
    }
)

_FORMAT: Final = "resguard: %(levelname)s %(message)s"


def get_logger(name: str = "resguard") -> logging.Logger:
    """The ``resguard`` logger or one of its children (``"resguard.cache"``)."""
    return logging.getLogger(name)


def emit(
    logger: logging.Logger,
    level: int,
    msg: str,
    *args: object,
    extra: Mapping[str, object] | None = None,
    exc_info: bool | None = None,
    stacklevel: int = 1,
) -> bool:
    """``logger.log(level, msg, *args, extra=extra)`` that never raises: Python's logging
    does not catch what a handler's ``emit`` itself raises (a JSON handler with a bug, a
    closed stream), and a log line must never kill a monitor's thread or turn a refusal
    into a 500. A raising handler is said once on standard error (:func:`handler_failed`);
    returns whether the record went through. The record names the line that called this
    one (*stacklevel* frames up: 1, the caller), not this helper."""
    try:
        logger.log(level, msg, *args, extra=extra, exc_info=exc_info, stacklevel=stacklevel + 1)
    except Exception as error:
        handler_failed(error)
        return False
    return True


_handler_failures = itertools.count()  # next() is atomic: how many records a handler lost


def handler_failed(error: BaseException) -> None:
    """Say, once per process, on standard error (never through logging: the broken handler
    would be called again), that a logging handler raised and resguard's lines may be lost."""
    if next(_handler_failures) != 0:
        return
    try:
        stream = sys.stderr if sys.stderr is not None else sys.__stderr__
        if stream is not None:
            stream.write(
                f"resguard: a logging handler raised {type(error).__name__}: {error}; "
                "resguard goes on, its log lines may be lost (said once)\n"
            )
            stream.flush()
    except Exception:  # a closed standard error: nothing left to tell
        pass


def fields(event: str, **values: object) -> dict[str, object]:
    """The ``extra`` of a record about *event*: ``fields("reclaim_step", step="cache",
    freed_bytes=1024)`` is ``{"resguard_event": "reclaim_step", "resguard_step": "cache",
    "resguard_freed_bytes": 1024}``. A name outside :data:`FIELD_NAMES` is an InvalidValue
    (a typo would otherwise be a field no dashboard finds)."""
    unknown = sorted(set(values) - FIELD_NAMES)
    if unknown:
        raise InvalidValue(
            f"unknown log field(s) {unknown}; expected some of {sorted(FIELD_NAMES)}"
        )
    extra: dict[str, object] = {PREFIX + "event": event}
    for name, value in values.items():
        extra[PREFIX + name] = value
    return extra


def verdict_fields(verdict: Any) -> dict[str, object]:
    """The level, rules and culprits of *verdict* (a :class:`resguard.Verdict`, read by
    its attributes: this module sits below the rules) as ``extra`` fields."""
    breaches = tuple(getattr(verdict, "breaches", ()))
    rules = [str(breach.rule) for breach in breaches]
    culprits: list[str] = []
    for breach in breaches:
        for offender in getattr(breach, "offenders", ()):
            label = str(offender.label)
            if label not in culprits:
                culprits.append(label)
    level = getattr(verdict, "level", None)
    return {
        PREFIX + "level": getattr(level, "name", None),
        PREFIX + "rule": rules[0] if rules else None,
        PREFIX + "rules": rules,
        PREFIX + "culprits": culprits,
    }


class DefaultHandler(logging.Handler):
    """INFO and above on ``sys.stderr`` (looked up at each record, so a redirection made
    later is followed) while logging is not configured; nothing once it is."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(_FORMAT))

    def active(self) -> bool:
        """Whether nobody configured logging: the root logger has no handler and the
        ``resguard`` logger has no handler but this one."""
        if logging.getLogger().handlers:
            return False
        return all(handler is self for handler in _root.handlers)

    def emit(self, record: logging.LogRecord) -> None:
        if not self.active():
            return
        try:
            stream = sys.stderr
            if stream is None:  # pythonw, a daemon with its streams closed
                return
            stream.write(self.format(record) + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            try:  # logging's report goes to the same standard error, which may be closed
                self.handleError(record)
            except Exception:  # (ValueError: I/O operation on closed file): nowhere to say it
                pass


_root = logging.getLogger("resguard")
if _root.level == logging.NOTSET:
    _root.setLevel(logging.INFO)
DEFAULT_HANDLER: Final = next(
    (handler for handler in _root.handlers if isinstance(handler, DefaultHandler)), DefaultHandler()
)
_root.addHandler(DEFAULT_HANDLER)  # (a second import of this module adds nothing)


def set_default_level(level: int) -> None:
    """What the default handler writes from *level* up (INFO unless changed): the command
    line keeps its standard error for warnings, a server shows the INFO lines too."""
    DEFAULT_HANDLER.setLevel(level)


class RefusalLog:
    """Refusals of one guard, said as a few lines, not one per request.

    :meth:`note` is called on every refusal: it counts without a lock (``next()`` on an
    ``itertools.count`` is one atomic C call) and reads the clock; at most once per
    *interval_s* it writes a line: the first refusal of a burst at once, then a summary of
    what was refused since the last line. :meth:`flush_due` (the monitor's tick calls it
    through :func:`flush_due_refusals`) tells a burst's tail once the interval is over,
    though no refusal followed; :meth:`flush` tells it now. Call them outside any lock of
    your own: they may write a line. A line never raises (:func:`emit`).
    """

    def __init__(
        self,
        name: str,
        *,
        interval_s: float = 10.0,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.interval_s = float(interval_s)
        self.logger = logger if logger is not None else get_logger("resguard.guard")
        self._clock = clock
        self._counters: dict[str, itertools.count[int]] = {}
        self._reads: dict[str, int] = {}  # per reason: next() calls made only to read it
        self._said: dict[str, int] = {}  # per reason: refusals already in a line
        self._due_s = -float("inf")
        self._last_s: float | None = None  # when the last line was written
        self._pending = False  # set after a count, cleared before one is read: none is lost
        self._writing = threading.Lock()  # taken by the one caller writing a line
        _REFUSAL_LOGS.add(self)

    def note(self, reason: str) -> None:
        """Count one refusal for *reason*; write a line when one is due."""
        counter = self._counters.get(reason)
        if counter is None:
            counter = self._counters.setdefault(reason, itertools.count())
        next(counter)
        self._pending = True
        if self._clock() >= self._due_s:
            self._write()

    def flush(self) -> None:
        """Write the summary of what was counted and not yet said (nothing if none)."""
        self._write(tail=True)

    def flush_due(self) -> None:
        """Write the summary of what was not yet said if its interval is over: the tail of
        a burst that ended is told within about one interval, not at the next refusal."""
        if self._pending and self._clock() >= self._due_s:
            self._write(tail=True)

    @property
    def counted(self) -> dict[str, int]:
        """Refusals counted so far, by reason."""
        with self._writing:
            return {reason: self._read(reason) for reason in list(self._counters)}

    def _read(self, reason: str) -> int:
        """How many refusals *reason* counted. Reading an ``itertools.count`` advances it,
        so the reads are counted apart and taken off (under ``_writing``)."""
        value = next(self._counters[reason])
        reads = self._reads.get(reason, 0)
        self._reads[reason] = reads + 1
        return value - reads

    def _write(self, *, tail: bool = False) -> None:
        if not self._writing.acquire(blocking=False):
            return  # another caller is writing this line
        try:
            self._pending = False
            now_s = self._clock()
            new: dict[str, int] = {}
            for reason in list(self._counters):
                total = self._read(reason)
                if total > self._said.get(reason, 0):
                    new[reason] = total - self._said.get(reason, 0)
                    self._said[reason] = total
            if not new:
                return
            last_s, self._last_s = self._last_s, now_s
            self._due_s = now_s + self.interval_s
            self._line(new, now_s, last_s, tail)
        finally:
            self._writing.release()

    def _line(self, new: Mapping[str, int], now_s: float, last_s: float | None, tail: bool) -> None:
        refused = sum(new.values())
        by_reason = ", ".join(f"{reason}={count}" for reason, count in sorted(new.items()))
        extra = fields(
            "refusals",
            guard=self.name,
            refused=refused,
            refused_by_reason=dict(new),
            interval_s=self.interval_s,
        )
        # a burst starts with its first refusal, a whole interval after the last line (a
        # tail told by a flush is a summary, whatever its count)
        if not tail and refused == 1 and (last_s is None or now_s - last_s >= self.interval_s):
            emit(
                self.logger,
                logging.WARNING,
                "%s refused 1 request: %s; a summary follows at most every %gs while "
                "refusals go on",
                self.name,
                next(iter(new)),
                self.interval_s,
                extra=extra,
            )
            return
        since_s = now_s - last_s if last_s is not None else 0.0
        emit(
            self.logger,
            logging.WARNING,
            "%s refused %d request%s in the last %.0fs: %s",
            self.name,
            refused,
            "" if refused == 1 else "s",
            since_s,
            by_reason,
            extra=extra,
        )


_REFUSAL_LOGS: weakref.WeakSet[RefusalLog] = weakref.WeakSet()


def _refusal_logs() -> list[RefusalLog]:
    """The refusal logs now. A guard made in another thread while this lists them makes
    the set change size under the iteration (RuntimeError): the listing is taken again."""
    for _ in range(100):
        try:
            return list(_REFUSAL_LOGS)
        except RuntimeError:
            continue
    return []  # a storm of new guards: their tails are told at the next call


def flush_refusals() -> None:
    """Say the tail of every refusal burst not said yet (each :class:`RefusalLog`'s
    :meth:`~RefusalLog.flush`): called on a level change, so the refusals of an episode
    are told before the line that ends it."""
    for refusals in _refusal_logs():
        refusals.flush()


def flush_due_refusals() -> None:
    """Say the tail of every refusal burst whose interval is over
    (:meth:`RefusalLog.flush_due`): the monitor's tick calls it, so a burst of refusals at
    level OK (concurrency, queue, reservation) is told whole, not only its first line."""
    for refusals in _refusal_logs():
        refusals.flush_due()
