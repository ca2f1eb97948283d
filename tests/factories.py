"""Sizes the tests write figures in (the snapshot factories are public: resguard.testing)."""

from __future__ import annotations

GiB = 2**30
MB = 10**6
