"""Which rows of the process table are the kernel's own threads, from the row alone.

On Linux every kernel thread is ``kthreadd`` (PID 2) or a child of it, and a kernel
thread maps no user memory (RSS 0). The RSS test keeps the rule honest in a PID
namespace (a container), where PID 2 is an ordinary process whose children have memory
and no kernel thread is visible at all. macOS's ``kernel_task`` and Windows' idle process
are PID 0 (no user process has PID 0 anywhere), Windows' ``System`` is PID 4."""

from __future__ import annotations

from resguard.snapshot import ProcessInfo

__all__ = ["is_kernel_thread"]

KTHREADD_PID = 2


def is_kernel_thread(row: ProcessInfo) -> bool:
    """Whether *row* is a kernel thread (or the kernel's own process), not a program: on
    Linux ``kthreadd`` (PID 2) and its children with no resident memory (``kworker/…``,
    ``ksoftirqd/…``), on macOS ``kernel_task`` (PID 0), on Windows PID 0 and ``System``
    (PID 4). ``resguard top`` and ``resguard watch`` hide them unless ``--all``; they hold
    no memory and cannot be signalled, so they are never culprits either."""
    if row.pid == 0:
        return True
    if row.pid == KTHREADD_PID and row.name == "kthreadd":
        return True
    if row.ppid == KTHREADD_PID and row.rss == 0:
        return True
    return row.pid == 4 and row.name == "System"
