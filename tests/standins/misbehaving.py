"""Moved to :mod:`resguard.testing.misbehaving` (public); kept for old imports."""

from resguard.testing.misbehaving import MODES, MisbehavingServer

__all__ = ["MODES", "MisbehavingServer"]
