"""The judge layer: rules over snapshots, combined into a :class:`Policy` that yields a
:class:`Verdict` (OK, WARNING or CRITICAL plus the breaches that decided it).

Rules
    :class:`Threshold` compares one snapshot field, named by its dotted path
    (``"memory.percent"``, ``"pressure.memory.some.avg10"``, ``"process.rss"``), with a
    value; :class:`ProcessThreshold` and :class:`ProcessCount` judge the process table;
    :class:`LeakDetector` and :class:`TimeToLimit` judge a metric's trend;
    :class:`SensorThreshold`, :class:`FanThreshold` and :class:`ThermalPressure` judge
    ``snapshot.heat``.

Culprits
    Every breach names whom to blame in ``Breach.offenders``: a table rule its firing rows;
    a rule on a memory or CPU metric (``memory.*``, ``swap.*``, ``pressure.memory.*``,
    ``cpu.percent``, ``pressure.cpu.*``, ``cpu.load_*``) the top 3 processes by RSS or
    CPU, as :func:`culprits` chooses them (scoped to ``snapshot.cgroup_pids`` when the
    memory limit is a cgroup's); a heat rule its sensors or fans. No rule names a kernel
    thread or the process that took the snapshot (``snapshot.process.pid``: resguard
    itself), and no CPU rule or CPU culprit judges a row whose ``cpu_percent`` is its
    average since it started (``ProcessInfo.cpu_since_start``: the table's first scan of
    it, a lifetime figure): that process is judged from its next scan on.

Memory edges
    :func:`memory_edges_bytes` (also :meth:`Policy.memory_edges_bytes`) lists every
    ``memory.used`` value, in bytes against the current limit, at which a rule changes its
    mind: a memory threshold's value and clear value, a leak rule's ``only_above``, or what
    a rule of your own returns from its ``memory_edges_bytes(memory)``. A Monitor polls
    faster near them and arms the kernel's memory thresholds there.

What a rule reads
    A rule's ``reads`` names the snapshot fields it judges. A Monitor samples a slow
    source (``"processes"``, ``"heat"``) only when :meth:`Policy.needs` says a rule reads
    it; culprits are taken from the process table when it is there and never make a
    Monitor sample it.

Semantics of a threshold (``op`` is ``>``, ``>=``, ``<`` or ``<=``)
    *trigger*: ``metric op value``. *hold*: ``metric op clear`` (``clear`` defaults to
    ``value``; for ``>``/``>=`` it must not be above ``value``, for ``<``/``<=`` not below).

    * An idle rule starts *pending* at the first sample where *trigger* holds, and stays
      pending while *trigger* keeps holding; any sample where it does not resets it.
    * A pending rule *fires* once it has been pending for ``for_`` seconds (``for_=0``: at
      once) and its cooldown has run out.
    * A firing rule keeps firing while *hold* holds (hysteresis: a metric hovering around
      ``value`` does not flap), and clears at the first sample where it does not; clearing
      starts the cooldown: the rule cannot fire again for ``cooldown`` seconds.
    * A metric that is ``None`` in a snapshot because the machine does not have it (no PSI
      on this kernel, no containers sampled) counts as "condition false": the rule is
      inactive and never an error.
    * A metric that is ``None`` because a source could not be read (a :class:`Fault` in
      ``snapshot.faults`` covers it, or the limit a percentage resolves against) is
      *unknown*: the rule cannot judge, and the verdict lists it in ``Verdict.unknown`` with
      the reason. An unknown sample is no evidence either way, so it changes nothing: a
      firing rule **keeps firing** (its breach repeats the last measured value, ``held_s``
      keeps growing), a pending rule stays pending without firing, an idle rule stays idle.
      A demanding user does not want a CRITICAL to flap to OK because ``/proc/meminfo`` could
      not be read for one tick; the rule clears on the first *known* sample where it no
      longer holds.
    * A rule whose ``step`` raises (a bug in a custom rule) does not stop the others: the
      verdict lists it in ``Verdict.unknown`` and the error is logged once per kind.

Values and units
    For a *percent* metric (``*.percent``, ``*_percent``, PSI ``avg10``/``avg60``/``avg300``)
    ``85``, ``"85"`` and ``"85%"`` all mean 85 percent. For a *byte* metric (``total``,
    ``limit``, ``used``, ``available``, ``free``, ``rss``, ``vms``, ``uss``,
    ``children_rss``) a value is a size (``"2GiB"``, ``"500MB"``, a number of bytes) or a
    percentage of the effective memory limit ``memory.limit`` of the snapshot being judged
    (``"85%"``; for ``swap.*`` of ``swap.total``). Other metrics (counts, seconds, load)
    take plain numbers. A percentage that cannot exceed 100 (memory, swap and host CPU
    percent, PSI, a container's share of its limit) rejects a figure above 100, and a
    threshold that can never fire (``> 100`` of such a percentage, ``< 0``) is rejected.
    Every bad argument raises :class:`~resguard.InvalidValue` or
    :class:`~resguard.InvalidType` quoting it as passed. The unit of a metric is the one
    its snapshot field declares (:func:`resguard.snapshot.metric_unit`); a byte figure is
    held as a :class:`~resguard.units.Amount`, its share resolved against the limit of each
    snapshot judged, never frozen.

State and time
    Rules keep no state themselves: a :class:`PolicyState` (from :meth:`Policy.new_state`)
    holds every rule's memory of the past, and ``now`` (monotonic seconds, default
    ``snapshot.monotonic``) is passed in, so tests inject time instead of sleeping.
    A metric named wrongly fails when the rule is built (:class:`~resguard.UnknownMetric`
    with close matches), never at evaluation. The pending/firing/cooldown machine is
    :class:`Sustain`, written once and public so that rules outside this package (a budget,
    your own) judge with the same semantics.

Layout (private modules, one job each; import from ``resguard.rules``)
    ``_verdict`` levels, breaches, verdicts, the rule protocol; ``_figures`` reading a
    rule's arguments (metric paths, levels, durations, threshold figures); ``_sustain`` the
    sustain machine; ``_threshold`` :class:`Threshold`; ``_table`` the per-row thresholds
    and :class:`ProcessCount`; ``_series`` bucketed history and slopes; ``_trends``
    :class:`LeakDetector` and :class:`TimeToLimit`; ``_heat`` the heat rules;
    ``_culprits`` :func:`culprits`; ``_edges`` :func:`memory_edges_bytes`; ``_policy``
    :class:`Policy`.
"""

from __future__ import annotations

from resguard.rules._culprits import culprit_resource, culprits
from resguard.rules._edges import memory_edges_bytes
from resguard.rules._figures import compile_getter as compile_getter
from resguard.rules._heat import FanThreshold, SensorThreshold, ThermalPressure, thermal_rank
from resguard.rules._policy import Policy, PolicyState
from resguard.rules._series import SeriesState as SeriesState
from resguard.rules._series import least_squares_slope as least_squares_slope
from resguard.rules._series import theil_sen_slope as theil_sen_slope
from resguard.rules._sustain import Sustain
from resguard.rules._table import ContainerThreshold, ProcessCount, ProcessThreshold
from resguard.rules._threshold import Threshold
from resguard.rules._trends import LeakDetector, TimeToLimit
from resguard.rules._verdict import OK_VERDICT as OK_VERDICT  # a snapshot no rule fires on
from resguard.rules._verdict import THERMAL_STATES, Breach, Level, Offender, Rule, Verdict

__all__ = [
    "THERMAL_STATES",
    "Breach",
    "ContainerThreshold",
    "FanThreshold",
    "LeakDetector",
    "Level",
    "Offender",
    "Policy",
    "PolicyState",
    "ProcessCount",
    "ProcessThreshold",
    "Rule",
    "SensorThreshold",
    "Sustain",
    "ThermalPressure",
    "Threshold",
    "TimeToLimit",
    "Verdict",
    "culprit_resource",
    "culprits",
    "memory_edges_bytes",
    "thermal_rank",
]

SustainState = Sustain  # the name before the machine was public

# shown, pickled and documented under the public path, not the private module
for _public in (
    Breach,
    ContainerThreshold,
    FanThreshold,
    LeakDetector,
    Level,
    Offender,
    Policy,
    PolicyState,
    ProcessCount,
    ProcessThreshold,
    Rule,
    SensorThreshold,
    SeriesState,
    Sustain,
    ThermalPressure,
    Threshold,
    TimeToLimit,
    Verdict,
    compile_getter,
    culprit_resource,
    culprits,
    memory_edges_bytes,
    thermal_rank,
    least_squares_slope,
    theil_sen_slope,
):
    _public.__module__ = __name__
del _public
