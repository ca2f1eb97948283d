"""Ready-made policies for the problem indicators seen in the field.

Each function returns a new :class:`~resguard.rules.Policy` (with its own state). Clear
levels sit below the firing levels so a metric hovering at the edge does not flap.

``laptop()`` — a developer machine (memory is a percentage of the *effective* limit:
the cgroup's inside a container):

=============================================  ===========  ==========================
rule                                           level        clears at
=============================================  ===========  ==========================
memory.percent >= 85                           WARNING      below 80
memory.percent >= 95                           CRITICAL     below 90
PSI memory some avg10 > 10 %                   WARNING      5 % or less
PSI memory full avg10 > 5 %                    CRITICAL     2 % or less
macOS memory pressure warning (level >= 2)     WARNING      normal (level 1)
macOS memory pressure critical (level >= 4)    CRITICAL     below critical
any one process above 100 % CPU for 30 s       WARNING      80 % or less
2 or more processes above 50 % CPU for 10 s    WARNING      fewer than 2 above 40 %
process RSS grows > 50 MB over 10 min          WARNING      growth of 25 MB or less
=============================================  ===========  ==========================

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
process RSS grows > 50 MB over 10 min          WARNING      growth of 25 MB or less
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
    LeakDetector,
    Level,
    Policy,
    ProcessCount,
    ProcessThreshold,
    Rule,
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
        growth="50MB",
        window="10m",
        level=Level.WARNING,
        name="process RSS grows > 50 MB per 10 min",
    )


def laptop(*, clock: Clock = monotonic) -> Policy:
    """The developer-machine indicators (see the module docstring for the numbers);
    *clock* is the policy's (:class:`~resguard.rules.Policy`)."""
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
            ProcessThreshold(
                cpu_percent_above=100,
                for_="30s",
                clear=80,
                level=Level.WARNING,
                name="a process above 100% CPU for 30s",
            ),
            ProcessCount(
                cpu_percent_above=50,
                at_least=2,
                for_="10s",
                clear=40,
                level=Level.WARNING,
                name="2+ processes above 50% CPU for 10s",
            ),
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
