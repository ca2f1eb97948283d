"""Ready-made policies for the problem indicators seen in the field.

Each function returns a new :class:`~resguard.rules.Policy` (with its own state). Clear
levels sit below the firing levels so a metric hovering at the edge does not flap.

``laptop()`` — a developer machine (memory is a percentage of the *effective* limit:
the cgroup's inside a container). Each number comes from the field notes this project
was born from (issue 14: a laptop overheating with Chrome renderers stuck at 240 % CPU,
an idle Ollama model holding 12.5 GB, 23 GB used of 24 GB with 85 MB free, fans running
continuously; "normal is ... the system < 80 % total CPU"). CPU is counted as ``top``
counts it: a process's percent is a share of one core, ``cpu.percent`` the machine's
share of all its cores.

==============================================  ========  ===================  ======
rule                                            level     clears at            source
==============================================  ========  ===================  ======
memory.percent >= 85                            WARNING   below 80             [1]
memory.percent >= 95                            CRITICAL  below 90             [2]
PSI memory some avg10 > 10 %                    WARNING   5 % or less          [3]
PSI memory full avg10 > 5 %                     CRITICAL  2 % or less          [3]
macOS memory pressure warning (level >= 2)      WARNING   normal (level 1)     [3]
macOS memory pressure critical (level >= 4)     CRITICAL  below critical       [3]
runaway: a process > 90 % of a core for 60 s    WARNING   80 % or less         [4]
a process above 100 % of a core for 30 s        WARNING   80 % or less         [5]
2+ processes above 50 % of a core for 10 s      WARNING   fewer than 2 > 40 %  [6]
total CPU above 80 % for 60 s                   WARNING   70 % or less         [7]
swap in use grows > 256 MiB per 5 min           WARNING   growth of 128 MiB    [2]
a sensor above its high mark for 30 s           WARNING   5 °C below the mark  [8]
macOS thermal pressure heavy or worse           WARNING   below heavy          [8]
macOS thermal pressure trapping or worse        CRITICAL  below trapping       [8]
a fan above *fan_rpm_above* for 5 min           WARNING   90 % of the figure   [9]
process RSS grows > 50 MiB over 10 min          WARNING   growth of 25 MiB     [10]
==============================================  ========  ===================  ======

Sources, the field notes' words: [1] "memory > 20 GB used (on 24 GB)", 83 %; [2] "23 GB
used and 85 MB free", 96 %: a machine out of memory swaps, so swap growing is the same
trouble seen a little earlier; [3] "responsiveness degraded" (PSI, and the Mac's own
judgement of memory pressure: the time tasks stall waiting for memory); [4] the stuck
renderer, and a busy loop ``while 1: pass`` measured at 93-99 % of a core for 34 s that
today's preset called OK; [5] "any single process > 100 % CPU" (renderers at 240 %);
[6] "several processes > 50 % at once"; [7] "the system < 80 % total CPU" is normal;
[8] the laptop overheating (the sensors' own ``high`` marks, or macOS's thermal pressure
from ``pmset -g therm``: heavy is the Mac limiting its CPU speed or a thermal warning
level of 5, "danger", trapping a level of 10, "crisis"; see
:class:`~resguard.snapshot.HeatInfo`'s ``thermal_rank``); [9] "fans running
continuously"; [10] a leak in this process, as before.

Every breach names its culprits (:func:`resguard.rules.culprits`): the memory, swap and
PSI memory rules the three largest processes by RSS (as a share of the memory limit,
only the cgroup's own processes when the limit is a cgroup's), the total-CPU rule the
three busiest by CPU, the process rules the processes themselves, the heat rules the
sensors and fans. ``laptop(sensor_celsius_above=90)`` judges every sensor against 90 °C
(clearing at 85 °C) instead of its own high mark (sensors without a high mark are
skipped by the default form). There is no fan rule unless ``fan_rpm_above`` is given:
what "fast" means depends on the fan (a laptop's idles at 1200-2500 rpm and runs flat
out at 4000-6500), and a rule with a guessed figure would fire on a fan that is only
doing its job. The swap rule judges the slope of ``swap.used`` only while swap is in
use (``only_above=0``): a host without swap, swap that does not grow, or swap emptied
while the trend still remembers it growing never fires it.

``service()`` — a service in production or in a container: no process-table rules (a
service judges itself, not the machine), tighter memory levels, and a time-to-limit
forecast so reclaiming starts before the limit is near:

=============================================  ===========  ==========================
rule                                           level        clears at
=============================================  ===========  ==========================
memory.percent >= 80                           WARNING      below 75
memory.percent >= 90                           CRITICAL     below 85
PSI memory some avg10 > 5 %                    WARNING      2 % or less
PSI memory full avg10 > 2 %                    CRITICAL     1 % or less
macOS memory pressure warning (level >= 2)     WARNING      normal (level 1)
macOS memory pressure critical (level >= 4)    CRITICAL     below critical
memory.used reaches memory.limit within 2 min  WARNING      3 min or more
process RSS grows > 50 MiB over 10 min         WARNING      growth of 25 MiB or less
=============================================  ===========  ==========================

PSI rules are inactive on kernels without PSI, the macOS pressure rules
(``pressure.memory_level``: the kernel's ``kern.memorystatus_vm_pressure_level``, 1
normal, 2 warning, 4 critical) everywhere but macOS; process rules are inactive while the
snapshot has no process table (a Monitor samples it when a policy has such rules).
Combine a preset with your own rules: ``Policy([*presets.laptop().rules, my_rule])``.
"""

from __future__ import annotations

from resguard._modules.clock import Clock, monotonic
from resguard.rules import (
    FanThreshold,
    LeakDetector,
    Level,
    Policy,
    ProcessCount,
    ProcessThreshold,
    Rule,
    SensorThreshold,
    ThermalPressure,
    Threshold,
    TimeToLimit,
)

__all__ = ["laptop", "service"]


def _memory_rules(
    *,
    warning: float,
    warning_clear: float,
    critical: float,
    critical_clear: float,
    psi_some: float,
    psi_some_clear: float,
    psi_full: float,
    psi_full_clear: float,
) -> list[Rule]:
    return [
        Threshold(
            "memory.percent",
            ">=",
            warning,
            level=Level.WARNING,
            clear=warning_clear,
            name=f"memory >= {warning:g}% of limit",
        ),
        Threshold(
            "memory.percent",
            ">=",
            critical,
            level=Level.CRITICAL,
            clear=critical_clear,
            name=f"memory >= {critical:g}% of limit",
        ),
        Threshold(
            "pressure.memory.some.avg10",
            ">",
            psi_some,
            level=Level.WARNING,
            clear=psi_some_clear,
            name=f"memory pressure (some avg10) > {psi_some:g}%",
        ),
        Threshold(
            "pressure.memory.full.avg10",
            ">",
            psi_full,
            level=Level.CRITICAL,
            clear=psi_full_clear,
            name=f"memory pressure (full avg10) > {psi_full:g}%",
        ),
        *_macos_pressure_rules(),
    ]


def _macos_pressure_rules() -> list[Rule]:
    """macOS's own judgement of memory pressure, the level Activity Monitor shows: the
    kernel debounces it already, so each rule clears as soon as the kernel's level drops
    below it. ``None`` (no fault) on other platforms: the rules are inactive there."""
    return [
        Threshold(
            "pressure.memory_level",
            ">=",
            2,
            level=Level.WARNING,
            clear=2,
            name="macOS memory pressure warning (level >= 2)",
        ),
        Threshold(
            "pressure.memory_level",
            ">=",
            4,
            level=Level.CRITICAL,
            clear=4,
            name="macOS memory pressure critical (level >= 4)",
        ),
    ]


def _leak() -> LeakDetector:
    return LeakDetector(
        "process.rss",
        growth="50MiB",
        window="10m",
        level=Level.WARNING,
        name="process RSS grows > 50 MiB per 10 min",
    )


def _cpu_rules() -> list[Rule]:
    """The field notes' CPU indicators: a runaway, more than a core, several busy at once,
    the machine's total."""
    return [
        ProcessThreshold(
            cpu_percent_above=90,
            for_="60s",
            clear=80,
            level=Level.WARNING,
            name="runaway: a process above 90% of a core for 60s",
        ),
        ProcessThreshold(
            cpu_percent_above=100,
            for_="30s",
            clear=80,
            level=Level.WARNING,
            name="a process above 100% of a core for 30s",
        ),
        ProcessCount(
            cpu_percent_above=50,
            at_least=2,
            for_="10s",
            clear=40,
            level=Level.WARNING,
            name="2+ processes above 50% of a core for 10s",
        ),
        Threshold(
            "cpu.percent",
            ">",
            80,
            level=Level.WARNING,
            for_="60s",
            clear=70,
            name="total CPU above 80% for 60s",
        ),
    ]


def _heat_rules(
    sensor_celsius_above: float | str | None, fan_rpm_above: float | str | None
) -> list[Rule]:
    """A sensor over its mark (or a figure) for 30 s, macOS's thermal pressure, and the
    fans over *fan_rpm_above* for 5 minutes when a figure is given."""
    if sensor_celsius_above is None:
        sensor = SensorThreshold(above_high=True, for_="30s", margin_celsius=5, level=Level.WARNING)
    else:
        figure = SensorThreshold(celsius_above=sensor_celsius_above)  # checks it as typed
        sensor = SensorThreshold(
            celsius_above=figure.celsius_above,
            clear=max(0.0, float(figure.celsius_above or 0) - 5),
            for_="30s",
            level=Level.WARNING,
        )
    rules: list[Rule] = [
        sensor,
        ThermalPressure("heavy", level=Level.WARNING),
        ThermalPressure("trapping", level=Level.CRITICAL),
    ]
    if fan_rpm_above is not None:
        fan = FanThreshold(rpm_above=fan_rpm_above)  # checks it as typed
        rules.append(
            FanThreshold(
                rpm_above=fan.rpm_above,
                clear=fan.rpm_above * 0.9,
                for_="5m",
                level=Level.WARNING,
                name=f"fans above {fan.rpm_above:g} rpm for 5m",
            )
        )
    return rules


def laptop(
    *,
    clock: Clock = monotonic,
    fan_rpm_above: float | str | None = None,
    sensor_celsius_above: float | str | None = None,
) -> Policy:
    """The developer-machine indicators (see the module docstring for the numbers and
    where they come from); *clock* is the policy's (:class:`~resguard.rules.Policy`).
    *fan_rpm_above* adds the fan rule (none without it); *sensor_celsius_above* judges
    every sensor against that figure instead of its own high mark."""
    return Policy(
        [
            *_memory_rules(
                warning=85,
                warning_clear=80,
                critical=95,
                critical_clear=90,
                psi_some=10,
                psi_some_clear=5,
                psi_full=5,
                psi_full_clear=2,
            ),
            *_cpu_rules(),
            LeakDetector(
                "swap.used",
                growth="256MiB",
                window="5m",
                only_above=0,
                level=Level.WARNING,
                name="swap in use grows > 256 MiB per 5 min",
            ),
            *_heat_rules(sensor_celsius_above, fan_rpm_above),
            _leak(),
        ],
        clock=clock,
    )


def service(*, clock: Clock = monotonic) -> Policy:
    """The service indicators: tighter memory, no process table, a time-to-limit forecast;
    *clock* is the policy's (:class:`~resguard.rules.Policy`)."""
    return Policy(
        [
            *_memory_rules(
                warning=80,
                warning_clear=75,
                critical=90,
                critical_clear=85,
                psi_some=5,
                psi_some_clear=2,
                psi_full=2,
                psi_full_clear=1,
            ),
            TimeToLimit(
                within="2m",
                level=Level.WARNING,
                metric="memory.used",
                limit="memory.limit",
                window="1m",
                clear="3m",
                name="memory limit reached within 2 min",
            ),
            _leak(),
        ],
        clock=clock,
    )
