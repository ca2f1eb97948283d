"""Shared test settings. The integration fixtures live in tests/plugins/, one module per
part, declared as plugins in the root conftest.py (the docs' pages use them too)."""

from __future__ import annotations

from hypothesis import settings

# Hypothesis' per-example deadline measures the machine, not the code: on a loaded
# two-core CI runner it fails correct tests. Speed is measured by benchmarks/ instead.
settings.register_profile("resguard", deadline=None)
settings.load_profile("resguard")
