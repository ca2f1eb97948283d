"""User names for uids: through ``pwd`` where the platform has it (not on Windows)."""

from __future__ import annotations

from resguard._probes.names import clean_text

try:
    import pwd as _pwd
except ImportError:  # Windows: the psutil reader asks the process for its user instead
    _pwd = None  # type: ignore[assignment]

__all__ = ["HAS_PWD", "user_name"]

HAS_PWD = _pwd is not None


def user_name(uid: int | None) -> str | None:
    """The name of *uid*; its number as a string when no user has it; ``None`` when the
    uid is unknown or this platform has no user database."""
    if uid is None or _pwd is None:
        return None
    try:
        return clean_text(_pwd.getpwuid(uid).pw_name)
    except (KeyError, OverflowError, TypeError):
        return str(uid)
