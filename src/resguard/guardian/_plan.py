"""The guardian's decisions as a sans-I/O state machine: for each verdict (and the time it
was judged at), which actions fire now and which actions' rules cleared.

* An action matches a breach when its ``when`` names the breach's rule, or when ``when``
  is a level and the breach is at or above it. Each (action, rule) pair is tracked alone:
  its *episode* runs from the first verdict that holds the breach to the first that does
  not.
* ``notify`` fires once per episode: at its start, or later in the same episode once the
  cooldown since the pair's previous notification has run out; never twice.
* Every other action fires while the episode lasts, at most once per ``cooldown_s`` for
  each (action, rule) pair (the cooldown outlives an episode: a rule that flaps does not
  make an action fire faster). A process action (renice, pause, stop) also fires, within
  its cooldown, when the breach names a culprit it did not name at the pair's previous
  firing: a second runaway is not left running for the rest of the first one's cooldown
  (the culprits acted on already are skipped by the effects: paused, reniced or stopped).
* A firing that found nothing to act on (every outcome ``skipped: ...``: no culprit
  matches, no idle model) does not count: the runner says so (:meth:`Planner.found_nothing`)
  and the action may fire at the next verdict.
* ``pause`` and ``renice`` are undone once no rule they acted for has held for the
  action's ``hold`` (default its cooldown): the decision lists them under ``clear`` once,
  after they fired. A pause stops the process burning CPU, so its CPU rule clears at the
  next verdict: without the hold the pause would last one interval. A breach that returns
  within the hold restarts it.

Nothing here reads a clock or touches a process; the runner passes ``now`` in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from resguard._errors import InvalidValue
from resguard.guardian._actions import PROCESS_ACTIONS, ActionSpec
from resguard.rules import Breach, Level, Verdict

__all__ = ["UNDONE_ON_CLEAR", "Decision", "Planner"]

UNDONE_ON_CLEAR = frozenset({"pause", "renice"})
"""The actions whose effect is undone (SIGCONT, the nice value restored) when their rule
clears."""


@attrs.frozen
class Decision:
    """What to do after one verdict: ``fire`` the (action, breach) pairs, in the order of
    the actions, and ``clear`` the actions whose rules all cleared. ``early`` holds the
    (action index, rule) pairs of ``fire`` that fired within their cooldown, for a culprit
    not named before: one that finds nothing to act on is not news (the new culprit is not
    one `match` covers), so the runner does not journal it."""

    fire: tuple[tuple[ActionSpec, Breach], ...] = ()
    clear: tuple[ActionSpec, ...] = ()
    early: frozenset[tuple[int, str]] = frozenset()


def matches(spec: ActionSpec, breach: Breach) -> bool:
    """Whether *spec*'s ``when`` covers *breach* (its rule, or a level at or below)."""
    if spec.when in Level.__members__ and spec.when != "OK":
        return breach.level >= Level[spec.when]
    return breach.rule == spec.when


class Planner:
    """The decision state of one guardian: ``planner.step(verdict, now) -> Decision``.

    State is bounded by the number of (action, rule) pairs, i.e. by the policy. Actions
    are told apart by their ``index`` (unique: :class:`GuardianConfig` checks it).
    """

    __slots__ = (
        "_acted",
        "_before",
        "_clear_since",
        "_culprits",
        "_last_fired",
        "_notified",
        "actions",
    )

    def __init__(self, actions: Iterable[ActionSpec]) -> None:
        self.actions: tuple[ActionSpec, ...] = tuple(actions)
        indexes = [spec.index for spec in self.actions]
        if len(set(indexes)) != len(indexes):
            raise InvalidValue(f"actions with indexes {indexes}: each action needs its own index")
        self._notified: set[tuple[int, str]] = set()  # notify pairs done this episode
        self._last_fired: dict[tuple[int, str], float] = {}
        self._acted: set[int] = set()  # pause/renice actions that fired since their clear
        self._before: dict[tuple[int, str], float | None] = {}  # last step's fired pairs
        self._clear_since: dict[int, float] = {}  # acted actions whose rules are all clear
        self._culprits: dict[tuple[int, str], frozenset[int]] = {}  # named at the last firing

    def step(self, verdict: Verdict, now: float) -> Decision:
        """The actions to take for *verdict*, judged at monotonic time *now*."""
        fire: list[tuple[ActionSpec, Breach]] = []
        clear: list[ActionSpec] = []
        early: set[tuple[int, str]] = set()
        present: set[tuple[int, str]] = set()
        self._before = {}
        for spec in self.actions:
            held = _matching(spec, verdict.breaches)
            for breach in held:
                key = (spec.index, breach.rule)
                present.add(key)
                named = frozenset(o.pid for o in breach.offenders if o.pid is not None)
                due = self._due(spec, key, now)
                if due or (
                    spec.do in PROCESS_ACTIONS
                    and key in self._culprits
                    and not named <= self._culprits[key]
                ):
                    if not due:
                        early.add(key)
                    fire.append((spec, breach))
                    self._before[key] = self._last_fired.get(key)
                    self._last_fired[key] = now
                    self._culprits[key] = named
                    if spec.do == "notify":
                        self._notified.add(key)
                    if spec.do in UNDONE_ON_CLEAR:
                        self._acted.add(spec.index)
            if held:
                self._clear_since.pop(spec.index, None)
            elif spec.index in self._acted:
                since = self._clear_since.setdefault(spec.index, now)
                if now - since >= spec.hold:
                    self._acted.discard(spec.index)
                    del self._clear_since[spec.index]
                    clear.append(spec)
        self._notified &= present  # an episode that ended may notify again when it restarts
        return Decision(tuple(fire), tuple(clear), frozenset(early))

    def _due(self, spec: ActionSpec, key: tuple[int, str], now: float) -> bool:
        if spec.do == "notify" and key in self._notified:
            return False
        last = self._last_fired.get(key)
        return last is None or now - last >= spec.cooldown_s

    def found_nothing(self, spec: ActionSpec, rule: str) -> None:
        """The last step's firing of *spec* for *rule* found nothing to act on (every
        outcome ``skipped``): it does not count, so neither its cooldown nor "notified"
        holds the action back at the next step (the culprit may be named then)."""
        key = (spec.index, rule)
        if key not in self._before:
            return
        previous = self._before.pop(key)
        if previous is None:
            self._last_fired.pop(key, None)
        else:
            self._last_fired[key] = previous
        self._notified.discard(key)


def _matching(spec: ActionSpec, breaches: Sequence[Breach]) -> list[Breach]:
    """The breaches *spec* covers, one per rule (the first, should a rule repeat)."""
    seen: dict[str, Breach] = {}
    for breach in breaches:
        if breach.rule not in seen and matches(spec, breach):
            seen[breach.rule] = breach
    return list(seen.values())
