"""Moved to :mod:`resguard.cache._sizeof` (the cache's sizer); kept until the benchmarks import it
from there."""

from __future__ import annotations

from resguard.cache._sizeof import MAX_DEPTH, SAMPLE_ITEMS, sizeof

__all__ = ["MAX_DEPTH", "SAMPLE_ITEMS", "sizeof"]
