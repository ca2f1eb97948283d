"""The guardian's vocabulary shared by its policy and its effects: what one
``[[guardian.action]]`` asks for (:class:`ActionSpec`), what an action touched
(:class:`Target`), what came of it (:class:`Outcome`, one journal line's result) and the
:class:`Effects` protocol the machine's effects implement (so the decisions can be tested
against a recording double and never signal anything)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal, Protocol

import attrs

from resguard._errors import InvalidValue

if TYPE_CHECKING:
    from resguard.rules import Breach
    from resguard.snapshot import Snapshot

__all__ = [
    "ACTIONS",
    "PROCESS_ACTIONS",
    "STATUSES",
    "UNDO_ACTIONS",
    "ActionSpec",
    "Effects",
    "Outcome",
    "Status",
    "Target",
]

ACTIONS = ("notify", "ollama-unload-idle", "renice", "pause", "stop")
"""Every value ``do`` accepts."""

UNDO_ACTIONS = {"pause": "resume", "renice": "renice-undo", "stop": "kill"}
"""The journal's action names of what follows an action on its own: a pause's SIGCONT
(``resume``), a renice put back (``renice-undo``), a stop's SIGKILL at the end of its grace
(``kill``)."""

PROCESS_ACTIONS = frozenset({"renice", "pause", "stop"})
"""The actions that signal or renice processes: each needs a non-empty ``match``."""


@attrs.frozen
class ActionSpec:
    """One ``[[guardian.action]]`` table, validated.

    ``when`` is a rule's name, or ``"WARNING"``/``"CRITICAL"`` for any breach at or above
    that level. ``match`` holds the opt-in patterns, searched in a process's name and in
    its joined command line; it is required (non-empty) for renice, pause and stop.
    """

    index: int  # position in the file, naming the action in the journal and the log
    when: str
    do: str
    match: tuple[re.Pattern[str], ...] = ()
    cooldown_s: float = 60.0
    idle_for_s: float = 300.0  # ollama-unload-idle: a model idle at least this long
    renice_by: int = 10  # renice: 1..19, lowers priority only
    grace_s: float = 5.0  # stop: SIGTERM, then SIGKILL after grace
    hold_s: float | None = None  # pause/renice: undone once the rule has been clear this long

    @property
    def hold(self) -> float:
        """How long the rule must have been clear before a pause or renice is undone
        (``hold``, default the cooldown)."""
        return self.cooldown_s if self.hold_s is None else self.hold_s

    @property
    def label(self) -> str:
        """``action[0] pause when runaway``: how the journal and log name this action."""
        return f"action[{self.index}] {self.do} when {self.when}"


@attrs.frozen
class Target:
    """What an action touched: a process (pid, name, exact start time) or a model."""

    pid: int | None = None
    name: str | None = None
    start_time: float | None = None
    model: str | None = None


Status = Literal["done", "would", "skipped", "refused", "failed"]
"""What came of an action: ``done``; ``would`` (dry-run); ``skipped`` (nothing to do, or a
process that must not be touched); ``refused`` (the action cannot be carried out as
configured); ``failed`` (it was tried and did not work)."""
STATUSES: tuple[Status, ...] = ("done", "would", "skipped", "refused", "failed")


@attrs.frozen
class Outcome:
    """One journal line's result part.

    ``status`` is one of :data:`STATUSES` and ``reason`` says why (empty for ``done`` and
    ``would``); ``result`` is the two as the journal writes them (``"skipped: <why>"``).
    ``freed_bytes`` is measured after the action, ``None`` where nothing was measured.
    """

    action: str
    target: Target | None
    dry_run: bool
    status: Status = attrs.field()
    reason: str = ""
    freed_bytes: int | None = None

    @status.validator
    def _known(self, attribute: object, status: object) -> None:
        if status not in STATUSES:
            raise InvalidValue(f"status={status!r}: expected one of {', '.join(STATUSES)}")

    @property
    def result(self) -> str:
        """``status`` and ``reason`` as one journal field: ``"done"``, ``"failed: why"``."""
        return f"{self.status}: {self.reason}" if self.reason else self.status


class Effects(Protocol):
    """What the guardian does to the machine (``resguard.guardian._effects.MachineEffects``)."""

    def act(
        self, spec: ActionSpec, breach: Breach, snapshot: Snapshot, *, dry_run: bool
    ) -> list[Outcome]:
        """Carry out *spec* for *breach* (or say what would be done)."""

    def clear(self, spec: ActionSpec, *, dry_run: bool) -> list[Outcome]:
        """The rule *spec* acted on cleared: SIGCONT what it paused, restore nice."""

    def pending(self) -> list[tuple[str | None, Outcome]]:
        """What earlier actions left due, done now (a stop's SIGKILL at the end of its
        grace), each with the rule it was for."""

    def recover(self) -> list[Outcome]:
        """Start: resume what an earlier guardian paused and never resumed."""

    def close(self) -> list[Outcome]:
        """Shutdown: resume every process still paused, abandon the SIGKILLs due."""
