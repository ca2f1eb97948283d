"""Objects a fork must not leave broken: in the child, each resets what only the parent's
threads could release (a lock held at the moment of the fork, a queue of waiters, the
threads of a Monitor), so the child never hangs on a lock nobody will ever let go."""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["ForkAware", "register"]


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_objects: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def register(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every child forked while *obj* lives."""
    _objects.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_objects):
        try:
            obj._after_fork_in_child()
        except Exception:  # a child must start even if one object cannot be reset
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
