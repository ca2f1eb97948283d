"""Whether this interpreter runs Python code one thread at a time: the one check the
lock-free paths of the guards and the caches rely on, made once at import."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["LOCK_FREE", "gil_enabled"]


def gil_enabled(sys_module: Any = sys) -> bool:
    """Whether the interpreter is CPython running with the GIL: False on a free-threaded
    build that runs without it (``sys._is_gil_enabled()`` False) and on other
    interpreters, whose atomicity nothing here was checked against."""
    check = getattr(sys_module, "_is_gil_enabled", None)
    gil = True if check is None else bool(check())
    return gil and sys_module.implementation.name == "cpython"


LOCK_FREE: bool = gil_enabled()
"""Whether lock-free paths may be taken: CPython with the GIL, decided at import (a
free-threaded build can turn its GIL on later, never off). Each guard and cache reads it
when it is made; tests that need the locked paths patch the module that reads it."""
