"""The process table's portable reader: ``psutil.process_iter`` on every platform psutil
supports (and on Linux when ``RESGUARD_BACKEND=psutil``).

Each process is read inside ``oneshot()``: status, name, parent, start time, RSS, CPU
times, threads and owner; what is not UTF-8 in a name or command line becomes U+FFFD, as
the linux reader decodes it. Processes that vanish, turn into zombies or refuse access while they
are read are skipped silently (as ``ps`` shows nothing it cannot read); anything else a
call raises, or a value that is not what psutil promises (``None`` for ``memory_info``),
skips the row with one warning per kind. When ``process_iter`` itself fails the table is
empty and says so in its faults.

psutil caches each :class:`psutil.Process` (and its start time) per PID between calls of
``process_iter`` and refuses to read a cached one whose PID changed hands
(``NoSuchProcess``); such a PID is read afresh, as the new process it now is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import psutil

from resguard._probes.files import FaultKind
from resguard._probes.identity import cmdline_of, same_start
from resguard._probes.names import clean_text
from resguard._probes.reporting import FaultLike, log_faults
from resguard.processes._rows import Previous, RowFacts, rows_from
from resguard.processes._users import HAS_PWD, user_name
from resguard.snapshot import Fault, ProcessInfo

__all__ = ["ITER_SOURCE", "PsutilProcesses", "describe_psutil"]

ITER_SOURCE = "psutil.process_iter()"
_HAS_UIDS = hasattr(psutil.Process, "uids")  # not on Windows
_EXITED = frozenset({psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD})


_Damage = tuple[str, FaultKind, str]  # (the call, the kind of damage, what it returned)


def _count(value: object) -> bool:
    """Whether *value* is a finite number >= 0 (what psutil promises for these calls)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value >= 0


def _read(process: psutil.Process, wall_s: float) -> RowFacts | _Damage | None:
    """The row's facts, what was damaged, or ``None`` for a zombie (no memory, no CPU:
    skipped, as on linux); psutil.Error (skip silently) and anything odd a platform's
    psutil raises pass through."""
    with process.oneshot():
        if process.status() in _EXITED:
            return None
        name = process.name()
        ppid = process.ppid()
        created = process.create_time()
        memory = process.memory_info()
        times = process.cpu_times()
        threads = process.num_threads()
        uids = process.uids() if _HAS_UIDS else None
    rss = getattr(memory, "rss", None)
    user, system = getattr(times, "user", None), getattr(times, "system", None)
    checks = (
        ("name", isinstance(name, str), name),
        ("ppid", isinstance(ppid, int) and _count(ppid), ppid),
        ("create_time", _count(created), created),
        ("memory_info", isinstance(rss, int) and _count(rss), memory),
        ("cpu_times", _count(user) and _count(system), times),
        ("num_threads", isinstance(threads, int) and _count(threads), threads),
    )
    for call, ok, value in checks:
        if not ok:
            return f"psutil.Process.{call}()", "garbage", f"{value!r} is not what it returns"
    uid = getattr(uids, "effective", None)
    return RowFacts(
        pid=process.pid,
        name=clean_text(name),
        ppid=ppid,
        create_time_s=float(created),
        rss_bytes=rss,  # type: ignore[arg-type]
        cpu_s=float(user) + float(system),  # type: ignore[arg-type]
        num_threads=threads,
        uid=uid if isinstance(uid, int) and not isinstance(uid, bool) and uid >= 0 else None,
        age_s=wall_s - float(created),
    )


def _detail(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class PsutilProcesses:
    """Reads every process through psutil; the table holds the lock around it."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._wall_clock = wall_clock
        self._previous: Previous = {}
        self._failing: frozenset[str] = frozenset()
        self.faults: tuple[Fault, ...] = ()

    def sample(self, now: float) -> list[ProcessInfo]:
        """Every readable process at the table's clock reading *now*."""
        faults: list[Fault] = []
        try:
            processes = list(psutil.process_iter())
        except Exception as error:  # psutil.Error, OSError or anything odd: an empty table
            processes = []
            faults.append(Fault("processes", ITER_SOURCE, "unreadable", _detail(error)))
        wall_s = self._wall_clock()
        damaged: dict[str, Fault] = {}
        facts = [self._facts(process, wall_s, damaged) for process in processes]
        rows, self._previous = rows_from(
            (fact for fact in facts if fact is not None), self._previous, now
        )
        faults.extend(damaged.values())
        self.faults = tuple(faults)
        if faults or self._failing:
            self._log(faults, now)
        return rows

    def _facts(
        self, process: psutil.Process, wall_s: float, damaged: dict[str, Fault]
    ) -> RowFacts | None:
        """*process*'s facts (re-read when its PID changed hands), or ``None`` to skip it."""
        try:
            try:
                facts = _read(process, wall_s)
            except psutil.NoSuchProcess:
                # gone, or its PID changed hands: psutil's cached Process remembers the
                # first owner's start time (ppid() checks it), so ask the PID afresh
                facts = _read(psutil.Process(process.pid), wall_s)
        except psutil.Error:
            return None  # gone, a zombie, or not ours to read
        except Exception as error:  # anything odd from a platform's psutil: skip the row
            fault = Fault("processes", "psutil.Process", "unreadable", _detail(error))
            damaged.setdefault("psutil.Process", fault)
            return None
        if facts is None or isinstance(facts, RowFacts):
            return facts
        call, kind, detail = facts
        damaged.setdefault(call, Fault("processes", call, kind, detail))
        return None

    def _log(self, faults: list[Fault], now_s: float) -> None:
        """One warning per failing call and kind; one more when it works again."""
        self._failing = log_faults(faults, self._failing, now_s, outcome=_outcome)


def _outcome(source: str, faults: Sequence[FaultLike]) -> str:
    return "no processes listed" if source == ITER_SOURCE else "rows skipped"


def describe_psutil(row: ProcessInfo) -> tuple[tuple[str, ...], str | None]:
    """*row*'s command line and user name, read only when its PID still belongs to the
    process of the row (the same start time); ``()`` and the uid's name otherwise."""
    cmdline = cmdline_of(row.pid, row.create_time)
    if HAS_PWD:
        return cmdline, user_name(row.uid)
    try:  # Windows: no user database to ask; the process names its user
        process = psutil.Process(row.pid)
        name: object = process.username()
        if not same_start(process.create_time(), row.create_time):
            return cmdline, None
    except Exception:  # gone, denied, or odd
        return cmdline, None
    return cmdline, clean_text(name) if isinstance(name, str) else None
