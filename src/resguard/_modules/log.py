"""The ``resguard`` logger, with a NullHandler as the logging HOWTO asks of libraries.

Without it, Python's last-resort handler would print resguard's warnings on stderr of
programs that never configured logging (and over the live view of ``resguard watch``).
"""

from __future__ import annotations

import logging

__all__ = ["get_logger"]

_root = logging.getLogger("resguard")
_root.addHandler(logging.NullHandler())


def get_logger(name: str = "resguard") -> logging.Logger:
    """The ``resguard`` logger or one of its children (``"resguard.cache"``)."""
    return logging.getLogger(name)
