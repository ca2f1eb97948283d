"""Supervise a command under a memory budget: ``resguard run -- CMD``.

The decisions are plain objects (:class:`Plan`, :class:`Backoff`, :class:`Exit`); the
I/O (:class:`Supervisor`: spawn, wait, signals, the cgroup) is kept thin around them.
See docs/supervise.md.
"""

from resguard.supervise._budget import (
    Budget,
    Cgroup,
    ParentFacts,
    budget_for,
    choose_budget,
    parent_facts,
)
from resguard.supervise._journal import RunJournal
from resguard.supervise._policy import (
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_BACKOFF_S,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_RESTART,
    DEFAULT_STABLE_S,
    DEFAULT_STOP_TIMEOUT_S,
    RESTART_POLICIES,
    Backoff,
    Decision,
    Exit,
    Plan,
    RestartPolicy,
)
from resguard.supervise._run import FORWARDED, RunConfig, Supervisor

__all__ = [
    "DEFAULT_BACKOFF_MAX_S",
    "DEFAULT_BACKOFF_S",
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_RESTART",
    "DEFAULT_STABLE_S",
    "DEFAULT_STOP_TIMEOUT_S",
    "FORWARDED",
    "RESTART_POLICIES",
    "Backoff",
    "Budget",
    "Cgroup",
    "Decision",
    "Exit",
    "ParentFacts",
    "Plan",
    "RestartPolicy",
    "RunConfig",
    "RunJournal",
    "Supervisor",
    "budget_for",
    "choose_budget",
    "parent_facts",
]

for _public in (
    Backoff,
    Budget,
    Cgroup,
    Decision,
    Exit,
    ParentFacts,
    Plan,
    RunConfig,
    RunJournal,
    Supervisor,
    budget_for,
    choose_budget,
    parent_facts,
):
    _public.__module__ = __name__
del _public
