"""Process names and text as both backends show them: the kernel's 15-character ``comm``
beside the full name psutil gives, and text that is not UTF-8 made printable."""

from __future__ import annotations

__all__ = ["COMM_CHARS", "clean_text", "full_name", "short_name"]

COMM_CHARS = 15
"""How much of a name Linux keeps as ``comm`` (``TASK_COMM_LEN`` less its NUL)."""


def clean_text(text: str) -> str:
    """*text* with what is not UTF-8 as U+FFFD, as the linux readers decode it: psutil
    and ``pwd`` hand undecodable bytes over as lone surrogates, which nothing can print."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate no byte stands for
            raw = text.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace")
    return text


def full_name(comm: str, argv: tuple[str, ...]) -> str:
    """A process's name as psutil gives it: the kernel cuts ``comm`` to
    :data:`COMM_CHARS`; a name that long is the basename of ``argv[0]`` when that starts
    with it (``systemd-journal`` is ``systemd-journald``)."""
    if len(comm) < COMM_CHARS or not argv:
        return comm
    longer = argv[0].rsplit("/", 1)[-1]
    return longer if longer.startswith(comm) else comm


def short_name(name: str) -> str:
    """*name* in the kernel's form: its first :data:`COMM_CHARS` characters."""
    return name[:COMM_CHARS]
