"""What the guardian does to the machine: :class:`MachineEffects`, the
:class:`~resguard.guardian._actions.Effects` that notifies, unloads idle Ollama models and
renices, pauses or stops processes.

**Which processes.** A process action targets the breach's culprits (its offenders with a
pid) whose name or joined command line a pattern of ``match`` finds (``re.search``).
When the breach names no process, it targets *one* process: of the matching processes
(one scan of the process table by the stopper), the largest by the breach's resource
(:func:`resguard.rules.culprit_resource`: RSS for memory, CPU otherwise, as the
snapshot's table measured them) that may be touched. A culprit that matches no
pattern is never touched, and there is no default pattern: an action without ``match``
is refused.

**The stopper's rules.** Every process is read and verified by
:class:`resguard.reclaim.ProcessStopper`, the opt-in stopper: never PID 1, the guardian,
its ancestors, another user's process, a kernel thread or a protected name
(:data:`resguard.reclaim.DEFAULT_PROTECTED_NAMES` and *protect*); its identity is its
exact start time, re-checked right before each signal through a pidfd where the kernel
has one. A dry run signals nothing and says ``"would"`` with the target.

**Pause, renice, and undoing them.** ``pause`` sends SIGSTOP and remembers the process by
pid and start time; when the rule clears (:meth:`MachineEffects.clear`) or the guardian
stops (:meth:`MachineEffects.close`) that same process, verified again, gets SIGCONT
(journalled as ``resume``; a nice value put back is ``renice-undo``). What is held paused
is recorded (``resguard.guardian._paused``) for a later guardian to resume
(:meth:`MachineEffects.recover`) should this one die without resuming it.
``renice`` only lowers priority (nice + ``by``, at most 19) and the rule's clearing puts
back the nice value it had, unless someone changed it since (putting back a lower value
needs the right to raise a priority: root, or ``RLIMIT_NICE``; without it the clearing is
journalled as failed). The nice value is set by pid right after the pidfd says the process
is still alive: a window of microseconds in which it could exit and its pid be reused
remains (``setpriority`` takes no pidfd).

**Stop.** ``stop`` sends SIGTERM and returns; the SIGKILL is due at the end of the grace
and :meth:`MachineEffects.pending` (called every tick) sends it, verified again, or says
the process exited. Nothing waits for a grace; :meth:`MachineEffects.close` abandons the
SIGKILLs still due.

**Outcomes.** Each action ends in an :class:`~resguard.guardian.Outcome` whose status
says what came of it (a stopper's refusal to touch a process is ``skipped``, an action
that cannot act as configured ``refused``); nothing here logs it: the journal does, once.

**Freed bytes.** ``stop``: the process's RSS as read right before it was signalled,
reported on the line that says it is gone or killed (``None`` on the SIGTERM's line).
``ollama-unload-idle``: the model's size as ``/api/ps`` reported it. ``pause``, ``renice``
and ``notify`` free nothing measurable: ``None``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from resguard._errors import ResguardError
from resguard.guardian._actions import (
    PROCESS_ACTIONS,
    UNDO_ACTIONS,
    ActionSpec,
    Outcome,
    Status,
    Target,
)
from resguard.guardian._notify import Notifier
from resguard.guardian._paused import PausedFile
from resguard.guardian._unload import ModelUnloader
from resguard.rules import culprit_resource

if TYPE_CHECKING:
    from resguard._probes.backend import Backend
    from resguard.reclaim import ProcessStopper, StopCandidate
    from resguard.rules import Breach
    from resguard.snapshot import ProcessInfo, Snapshot

__all__ = ["MachineEffects"]

_NO_MATCH = "a process action needs `match` patterns (there is no default)"
_MAX_NICE = 19
_ORPHAN_CHECK_S = 10.0  # how often a running guardian resumes what gone guardians left paused
_UNDO_RENICE = UNDO_ACTIONS["renice"]
_RECORDED = ("pid", "start_ticks", "create_time", "ppid", "name", "cmdline", "uid")
_Said = tuple[Status, str]  # an outcome's status and reason, before its target is known


@attrs.frozen
class _Changed:
    """A process an action changed and must put back: paused, or reniced from ``nice``."""

    candidate: StopCandidate
    target: Target
    nice: int | None = None  # renice: the value before; the one set is ``set_nice``
    set_nice: int | None = None
    match: tuple[str, ...] = ()  # the action's patterns, for the paused-process record


@attrs.frozen
class _Kill:
    """A stop whose SIGTERM was sent: SIGKILL is due at *deadline* (monotonic) unless the
    process exits first; *rule* is the rule it was stopped for (its journal lines')."""

    stopper: ProcessStopper
    candidate: StopCandidate
    target: Target
    rule: str
    deadline: float


class MachineEffects:
    """The guardian's effects on this machine (see the module's docstring).

    *backend* says how processes are read and verified (as for
    :class:`resguard.reclaim.ProcessStopper`); *protect* adds names never touched;
    *ollama_host* and *ollama_keep_alive* (the server's ``OLLAMA_KEEP_ALIVE``) are for
    ``ollama-unload-idle``; *notifier* and *unloader* replace the desktop notifier and the
    model unloader (tests); *wall_clock* is the epoch clock Ollama's expiry is compared with;
    *clock* (monotonic) dates a stop's SIGKILL; *paused_dir* is the directory where the
    processes held paused are recorded (``resguard.guardian._paused``; ``None``: nowhere).
    """

    def __init__(
        self,
        *,
        backend: Backend | None = None,
        protect: Iterable[str] = (),
        ollama_host: str | None = None,
        ollama_keep_alive: float | str | None = None,
        notifier: Notifier | None = None,
        unloader: ModelUnloader | None = None,
        wall_clock: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        paused_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._backend = backend
        self._protect = tuple(protect)
        self.notifier = notifier if notifier is not None else Notifier()
        if unloader is None:
            extra: dict[str, Any] = {} if wall_clock is None else {"wall_clock": wall_clock}
            unloader = ModelUnloader(ollama_host, keep_alive=ollama_keep_alive, **extra)
        self.unloader = unloader
        self._stoppers: dict[tuple[int, tuple[str, ...], float], ProcessStopper] = {}
        self._paused: dict[int, list[_Changed]] = {}
        self._reniced: dict[int, list[_Changed]] = {}
        self._kills: list[_Kill] = []
        self._clock = clock
        self._record = PausedFile(paused_dir)
        self._orphans_due = clock() + _ORPHAN_CHECK_S

    # ------------------------------------------------------------------ the protocol
    def act(
        self, spec: ActionSpec, breach: Breach, snapshot: Snapshot, *, dry_run: bool
    ) -> list[Outcome]:
        """Carry out *spec* for *breach* (in a dry run, say what would be done)."""
        if spec.do == "notify":
            return [self._notify(spec, breach, dry_run)]
        if spec.do == "ollama-unload-idle":
            return self.unloader.unload_idle(spec.idle_for_s, dry_run=dry_run)
        if spec.do not in PROCESS_ACTIONS:
            return [Outcome(spec.do, None, dry_run, "failed", f"unknown action {spec.do!r}")]
        if not spec.match:
            return [Outcome(spec.do, None, dry_run, "refused", _NO_MATCH)]
        try:
            stopper = self._stopper(spec)
        except ResguardError as error:  # a pattern that matches everything, say
            return [Outcome(spec.do, None, dry_run, "refused", str(error))]
        found = self._targets(stopper, breach, snapshot)
        if isinstance(found, str):
            return [Outcome(spec.do, None, dry_run, "skipped", found)]
        return [
            self._process(stopper, spec, candidate, dry_run, breach.rule) for candidate in found
        ]

    def clear(self, spec: ActionSpec, *, dry_run: bool) -> list[Outcome]:
        """The rule *spec* acted on cleared: SIGCONT to what it paused, nice values back."""
        outcomes = []
        try:
            stopper = self._stopper(spec) if spec.match else None
        except ResguardError:
            stopper = None
        for held in self._paused.pop(spec.index, []):
            outcomes.append(self._resume(stopper, held, dry_run))
        self._save()
        for held in self._reniced.pop(spec.index, []):
            outcomes.append(self._restore_nice(stopper, held, dry_run))
        return outcomes

    def pending(self) -> list[tuple[str | None, Outcome]]:
        """What earlier actions left due, done now: a stopped process that exited since
        its SIGTERM (``stop``, its RSS freed), or one still running at the end of its
        grace (``kill``: SIGKILL, verified first). Each with the rule it was for."""
        now = self._clock()
        outcomes: list[tuple[str | None, Outcome]] = []
        waiting = []
        for kill in self._kills:
            if self._exited(kill):
                outcomes.append((kill.rule, _exited(kill)))
            elif now >= kill.deadline:
                outcomes.append((kill.rule, self._kill(kill)))
            else:
                waiting.append(kill)
        self._kills = waiting
        if now >= self._orphans_due:  # another guardian may have died holding pauses
            self._orphans_due = now + _ORPHAN_CHECK_S
            outcomes.extend((None, outcome) for outcome in self._resume_leftovers())
        return outcomes

    def recover(self) -> list[Outcome]:
        """Start: SIGCONT to each process the paused-process record names that is still
        that very process (an earlier guardian paused it and never resumed it); the
        record is then rewritten with what this guardian holds (nothing yet). A running
        guardian does the same every 10 s (from :meth:`pending`) for the
        records of other guardians that have gone since."""
        outcomes = self._resume_leftovers()
        self._save()
        return outcomes

    def _resume_leftovers(self) -> list[Outcome]:
        from resguard.reclaim import ProcessStopper, StopCandidate

        outcomes = []
        for entry in self._record.leftovers():
            fields = {key: entry[key] for key in entry if key != "match"}
            candidate = StopCandidate(rss=0, protected=None, **fields)
            held = _Changed(candidate, _target(candidate), match=tuple(entry["match"]))
            try:
                stopper = ProcessStopper(list(held.match), enabled=True, protect=self._protect)
            except ResguardError as error:
                outcomes.append(Outcome("resume", held.target, False, "skipped", str(error)))
                continue
            outcomes.append(self._resume(stopper, held, False))
        return outcomes

    def close(self) -> list[Outcome]:
        """Shutdown: SIGCONT to every process still paused (reniced ones keep their nice);
        the SIGKILLs still due are abandoned (the processes were sent SIGTERM only)."""
        outcomes: list[Outcome] = []
        for kill in self._kills:
            if self._exited(kill):
                outcomes.append(_exited(kill))
                continue
            why = "the guardian stopped before its grace ran out: not killed"
            outcomes.append(Outcome("kill", kill.target, False, "skipped", why))
        self._kills = []
        for index, helds in list(self._paused.items()):
            stopper = next((s for key, s in self._stoppers.items() if key[0] == index), None)
            outcomes.extend(self._resume(stopper, held, False) for held in helds)
        self._paused.clear()
        self._save()
        self.unloader.close()
        return outcomes

    def _save(self) -> bool:
        entries = [
            {
                **{key: getattr(held.candidate, key) for key in _RECORDED},
                "match": list(held.match),
            }
            for helds in self._paused.values()
            for held in helds
        ]
        return self._record.save(entries)

    # ------------------------------------------------------------------ notify
    def _notify(self, spec: ActionSpec, breach: Breach, dry_run: bool) -> Outcome:
        title = f"resguard: {breach.level.name} {breach.rule}"
        body = breach.message.removeprefix(f"{breach.rule}: ")  # the title names the rule
        if dry_run:
            return Outcome(spec.do, None, True, "would")
        logged = self.notifier.program() is None
        failed = self.notifier.notify(title, body)
        if failed is not None:
            return Outcome(spec.do, None, False, "failed", failed)
        if logged:
            return Outcome(spec.do, None, False, "done", "logged: no notify-send or osascript")
        return Outcome(spec.do, None, False, "done")

    # ------------------------------------------------------------------ processes
    def _stopper(self, spec: ActionSpec) -> ProcessStopper:
        from resguard.reclaim import ProcessStopper

        key = (spec.index, tuple(pattern.pattern for pattern in spec.match), spec.grace_s)
        stopper = self._stoppers.get(key)
        if stopper is None:
            stopper = ProcessStopper(
                spec.match,
                enabled=True,
                dry_run=False,
                grace=spec.grace_s,
                protect=self._protect,
                backend=self._backend,
            )
            self._stoppers[key] = stopper
        return stopper

    def _targets(
        self, stopper: ProcessStopper, breach: Breach, snapshot: Snapshot
    ) -> list[StopCandidate] | str:
        """The processes to act on (see the module's docstring), or why there are none."""
        rows = {row.pid: row for row in snapshot.processes or ()}
        named = [offender.pid for offender in breach.offenders if offender.pid is not None]
        if named:
            found = []
            for pid in named:
                candidate = stopper.candidate(pid)
                row = rows.get(pid)
                if candidate is not None and (row is None or candidate.is_row(row)):
                    found.append(candidate)
            return found or "no culprit of the breach matches `match`"
        if snapshot.processes is None:
            return "the breach names no process and no process table was sampled"
        chosen = _largest(stopper.candidates(), rows, culprit_resource(breach.metric))
        return [chosen] if chosen is not None else "no process matches `match`"

    def _process(
        self,
        stopper: ProcessStopper,
        spec: ActionSpec,
        candidate: StopCandidate,
        dry_run: bool,
        rule: str,
    ) -> Outcome:
        target = _target(candidate)
        if candidate.protected is not None:
            return Outcome(spec.do, target, dry_run, "skipped", f"protected: {candidate.protected}")
        held = self._paused if spec.do == "pause" else self._reniced
        if any(h.candidate.same_process(candidate) for h in held.get(spec.index, [])):
            done = "paused" if spec.do == "pause" else "reniced"
            return Outcome(spec.do, target, dry_run, "skipped", f"already {done} by this action")
        if dry_run:
            return Outcome(spec.do, target, True, "would")
        if spec.do == "stop":
            return self._stop(stopper, candidate, target, rule)
        if not _can(spec.do):
            return Outcome(spec.do, target, False, "failed", f"this platform cannot {spec.do}")
        if spec.do == "pause":
            match = tuple(pattern.pattern for pattern in spec.match)
            paused = _Changed(candidate, target, match=match)
            helds = self._paused.setdefault(spec.index, [])
            helds.append(paused)
            if not self._save():  # recorded before the SIGSTOP: a crash after it leaves a record
                helds.remove(paused)
                self._save()
                why = f"the paused-process record {self._record.path} cannot be written"
                return Outcome(spec.do, target, False, "refused", why)
            status, why = self._send(stopper, candidate, signal.SIGSTOP)
            if status != "done":
                helds.remove(paused)
                self._save()
            return Outcome(spec.do, target, False, status, why)
        return self._renice(stopper, spec, candidate, target)

    def _stop(
        self, stopper: ProcessStopper, candidate: StopCandidate, target: Target, rule: str
    ) -> Outcome:
        """SIGTERM now; the SIGKILL is due at the end of the grace, sent by a later
        :meth:`pending` (the tick and a shutdown never wait for it)."""
        if any(kill.candidate.same_process(candidate) for kill in self._kills):
            return Outcome("stop", target, False, "skipped", "already sent SIGTERM; SIGKILL due")
        was_paused = False
        for helds in self._paused.values():  # a stopped process is no longer ours to resume
            kept = [held for held in helds if not held.candidate.same_process(candidate)]
            was_paused = was_paused or len(kept) != len(helds)
            helds[:] = kept
        self._save()
        with stopper.verified(candidate) as (handle, why):
            if handle is None:
                return Outcome("stop", target, False, "skipped", why)
            try:
                sent = handle.send(signal.SIGTERM)
                if sent and was_paused and hasattr(signal, "SIGCONT"):
                    handle.send(signal.SIGCONT)  # a stopped process acts on SIGTERM once resumed
            except OSError as error:
                return Outcome("stop", target, False, "failed", f"not permitted: {error}")
        if not sent:
            return Outcome("stop", target, False, "skipped", "it exited before it was signalled")
        grace = stopper.grace_s
        self._kills.append(_Kill(stopper, candidate, target, rule, self._clock() + grace))
        return Outcome("stop", target, False, "done", f"SIGTERM sent; SIGKILL in {grace:g} s")

    @staticmethod
    def _exited(kill: _Kill) -> bool:
        fresh = kill.stopper.candidate(kill.candidate.pid)
        return fresh is None or not fresh.same_process(kill.candidate)

    def _kill(self, kill: _Kill) -> Outcome:
        grace = kill.stopper.grace_s
        with kill.stopper.verified(kill.candidate) as (handle, why):
            if handle is None:
                return Outcome("kill", kill.target, False, "skipped", why)
            try:
                sent = handle.kill()
            except OSError as error:
                return Outcome("kill", kill.target, False, "failed", f"not permitted: {error}")
        if not sent:
            return _exited(kill)
        why = f"still running {grace:g} s after SIGTERM"
        return Outcome("kill", kill.target, False, "done", why, kill.candidate.rss)

    def _send(self, stopper: ProcessStopper, candidate: StopCandidate, signum: int) -> _Said:
        with stopper.verified(candidate) as (handle, why):
            if handle is None:  # the stopper's refusals: it may not be touched
                return "skipped", why
            try:
                sent = handle.send(signum)
            except OSError as error:
                return "failed", f"not permitted: {error.strerror or error}"
            return ("done", "") if sent else ("skipped", "it exited before it was signalled")

    def _renice(
        self, stopper: ProcessStopper, spec: ActionSpec, candidate: StopCandidate, target: Target
    ) -> Outcome:
        if not 1 <= spec.renice_by <= _MAX_NICE:  # the config refuses it; never raise one
            return Outcome("renice", target, False, "refused", f"by = {spec.renice_by}, not 1-19")
        with stopper.verified(candidate) as (handle, why):
            if handle is None:
                return Outcome("renice", target, False, "skipped", why)
            try:
                before = os.getpriority(os.PRIO_PROCESS, candidate.pid)
                after = min(before + spec.renice_by, _MAX_NICE)
                if after <= before:
                    return Outcome("renice", target, False, "skipped", f"already at nice {before}")
                if handle.exited():
                    return Outcome("renice", target, False, "skipped", "it exited")
                os.setpriority(os.PRIO_PROCESS, candidate.pid, after)
            except OSError as error:
                return Outcome("renice", target, False, "failed", str(error.strerror or error))
        held = _Changed(candidate, target, nice=before, set_nice=after)
        self._reniced.setdefault(spec.index, []).append(held)
        return Outcome("renice", target, False, "done")

    def _again(self, stopper: ProcessStopper | None, held: _Changed) -> StopCandidate | str:
        """The held process read afresh, the same one (by start time), or why not."""
        if stopper is None:
            return "its action has no `match` any more"
        fresh = stopper.candidate(held.candidate.pid)
        if fresh is None or not fresh.same_process(held.candidate):
            return "it is gone (its pid is free or another process's now)"
        return fresh

    def _resume(self, stopper: ProcessStopper | None, held: _Changed, dry_run: bool) -> Outcome:
        action = UNDO_ACTIONS["pause"]
        if dry_run:
            return Outcome(action, held.target, True, "would")
        fresh = self._again(stopper, held)
        if isinstance(fresh, str) or stopper is None:
            return Outcome(action, held.target, False, "skipped", str(fresh))
        status, why = self._send(stopper, fresh, signal.SIGCONT)
        return Outcome(action, held.target, False, status, why)

    def _restore_nice(
        self, stopper: ProcessStopper | None, held: _Changed, dry_run: bool
    ) -> Outcome:
        if dry_run:
            return Outcome(_UNDO_RENICE, held.target, True, "would")
        fresh = self._again(stopper, held)
        if isinstance(fresh, str) or stopper is None or held.nice is None:
            return Outcome(_UNDO_RENICE, held.target, False, "skipped", str(fresh))
        with stopper.verified(fresh) as (handle, why):
            if handle is None:
                return Outcome(_UNDO_RENICE, held.target, False, "skipped", why)
            try:
                now = os.getpriority(os.PRIO_PROCESS, fresh.pid)
                if now != held.set_nice:
                    why = f"its nice was changed since (now {now})"
                    return Outcome(_UNDO_RENICE, held.target, False, "skipped", why)
                os.setpriority(os.PRIO_PROCESS, fresh.pid, held.nice)
            except OSError as error:
                why = str(error.strerror or error)
                return Outcome(_UNDO_RENICE, held.target, False, "failed", why)
        return Outcome(_UNDO_RENICE, held.target, False, "done")


def _exited(kill: _Kill) -> Outcome:
    """A stopped process gone since its SIGTERM was sent: done, its RSS freed. Not "it
    exited after SIGTERM": it may have ended some other way (a SIGKILL from elsewhere)."""
    freed = kill.candidate.rss
    return Outcome("stop", kill.target, False, "done", "gone since its SIGTERM was sent", freed)


def _largest(
    candidates: Iterable[StopCandidate], rows: dict[int, ProcessInfo], resource: str | None
) -> StopCandidate | None:
    """Of the matching *candidates* that are rows of the table (not a later process with
    the pid), the largest by *resource* as the table measured it (RSS for memory, CPU
    otherwise) that may be touched; else the largest protected one (its outcome says why),
    else ``None``."""

    def size(candidate: StopCandidate) -> float:
        row = rows[candidate.pid]
        return row.rss if resource == "memory" else row.cpu_percent

    listed = [c for c in candidates if c.pid in rows and c.is_row(rows[c.pid])]
    listed.sort(key=size, reverse=True)
    free = [candidate for candidate in listed if candidate.protected is None]
    chosen = free or listed
    return chosen[0] if chosen else None


def _can(action: str) -> bool:
    """Whether this platform has what *action* needs (Windows has no SIGSTOP nor nice)."""
    if action == "pause":
        return hasattr(signal, "SIGSTOP") and hasattr(signal, "SIGCONT")
    return action != "renice" or hasattr(os, "setpriority")


def _target(candidate: StopCandidate) -> Target:
    return Target(pid=candidate.pid, name=candidate.name, start_time=candidate.start_time_s)
