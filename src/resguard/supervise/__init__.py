"""Supervise a command under a memory budget: ``resguard run -- CMD``.

The decisions are plain objects (:class:`Plan`, :class:`Backoff`, :class:`Exit`); the
I/O (:class:`Supervisor`: spawn, wait, signals, the cgroup) is kept thin around them.
See docs/supervise.md.
"""

from resguard.supervise._budget import Budget, Cgroup, choose_budget
from resguard.supervise._journal import RunJournal
from resguard.supervise._policy import (
    RESTART_POLICIES,
    Backoff,
    Decision,
    Exit,
    Plan,
    RestartPolicy,
)
from resguard.supervise._run import FORWARDED, RunConfig, Supervisor

__all__ = [
    "FORWARDED",
    "RESTART_POLICIES",
    "Backoff",
    "Budget",
    "Cgroup",
    "Decision",
    "Exit",
    "Plan",
    "RestartPolicy",
    "RunConfig",
    "RunJournal",
    "Supervisor",
    "choose_budget",
]

for _public in (
    Backoff,
    Budget,
    Cgroup,
    Decision,
    Exit,
    Plan,
    RunConfig,
    RunJournal,
    Supervisor,
    choose_budget,
):
    _public.__module__ = __name__
del _public
