"""The laptop guardian: a long-running agent that judges the machine by a policy from
``resguard.toml`` and acts on it (notify, unload idle Ollama models, renice, pause or
stop processes the user opted in by pattern), journalling every action.

Layout (private modules, one job each; import from ``resguard.guardian``)
    ``_actions`` the vocabulary shared by decisions and effects (:class:`ActionSpec`,
    :class:`Target`, :class:`Outcome`, the :class:`Effects` protocol); ``_config`` the
    ``[guardian]`` table (:func:`load_config`, :func:`load_policy`); ``_plan`` the
    decisions, sans I/O (:class:`Planner`); ``_journal`` the JSON-lines journal;
    ``_run`` the loop (:class:`Guardian`); ``_install`` the systemd unit and launchd
    agent; ``_effects``, ``_notify``, ``_unload`` what the actions do to the machine.
"""

from __future__ import annotations

from resguard.guardian._actions import ACTIONS, ActionSpec, Effects, Outcome, Target
from resguard.guardian._config import (
    PRESETS,
    GuardianConfig,
    load_config,
    load_policy,
    parse_config,
)
from resguard.guardian._install import (
    check_path,
    enable_hint,
    guardian_command,
    launchd_plist,
    systemd_unit,
    unit_path,
)
from resguard.guardian._journal import Journal
from resguard.guardian._plan import Decision, Planner
from resguard.guardian._run import Guardian

__all__ = [
    "ACTIONS",
    "PRESETS",
    "ActionSpec",
    "Decision",
    "Effects",
    "Guardian",
    "GuardianConfig",
    "Journal",
    "Outcome",
    "Planner",
    "Target",
    "check_path",
    "enable_hint",
    "guardian_command",
    "launchd_plist",
    "load_config",
    "load_policy",
    "parse_config",
    "systemd_unit",
    "unit_path",
]

for _public in (
    ActionSpec,
    Decision,
    Guardian,
    GuardianConfig,
    Journal,
    Outcome,
    Planner,
    Target,
    check_path,
    enable_hint,
    guardian_command,
    launchd_plist,
    load_config,
    load_policy,
    parse_config,
    systemd_unit,
    unit_path,
):
    _public.__module__ = __name__
del _public
