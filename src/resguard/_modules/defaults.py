"""Process-wide defaults made at first use, one per key (a backend: the default may
change while the process runs), made once even when threads race for the first one."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, MutableMapping
from typing import TypeVar

__all__ = ["made_once"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_lock = threading.Lock()


def made_once(made: MutableMapping[K, V], key: K, make: Callable[[], V]) -> V:
    """``made[key]``, made by *make* and kept there the first time it is asked for; the
    lock is taken only then (a default is read far more often than it is made)."""
    value = made.get(key)
    if value is None:
        with _lock:
            value = made.get(key)
            if value is None:
                value = made[key] = make()
    return value


def _fresh_lock() -> None:
    global _lock
    _lock = threading.Lock()  # a parent's thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_lock)
