"""Shared fixtures. Integration fixtures live in tests/plugins/, one module per part."""

from __future__ import annotations

from hypothesis import settings

pytest_plugins = [
    "plugins.integration",
    "plugins.cgroup",
    "plugins.docker",
    "plugins.ollama",
]

# Hypothesis' per-example deadline measures the machine, not the code: on a loaded
# two-core CI runner it fails correct tests. Speed is measured by benchmarks/ instead.
settings.register_profile("resguard", deadline=None)
settings.load_profile("resguard")
