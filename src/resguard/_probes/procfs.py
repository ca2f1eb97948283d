"""Parsers for /proc files: meminfo, stat (CPU times), a process's stat and statm."""

from __future__ import annotations

import os

__all__ = [
    "PAGE_SIZE",
    "TICKS_PER_S",
    "parse_meminfo",
    "parse_pid_stat",
    "parse_statm",
    "parse_total_cpu_ticks",
]

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

_MEMINFO_KEYS = ("MemTotal:", "MemAvailable:", "MemFree:", "SwapTotal:", "SwapFree:")


def parse_meminfo(text: str) -> dict[str, int]:
    """The fields of ``/proc/meminfo`` that snapshots use, in bytes."""
    result: dict[str, int] = {}
    for key in _MEMINFO_KEYS:
        start = text.find(key)
        if start >= 0:
            end = text.find("\n", start)
            result[key[:-1]] = int(text[start + len(key) : end].split()[0]) * 1024
    return result


def parse_total_cpu_ticks(text: str) -> tuple[int, int]:
    """(busy, total) clock ticks from the aggregate ``cpu`` line of ``/proc/stat``."""
    first = text[: text.index("\n")] if "\n" in text else text
    fields = [int(value) for value in first.split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is inside user
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def parse_pid_stat(text: str) -> tuple[str, str, int, int, int, int, int, int]:
    """(name, state, ppid, utime+stime ticks, num_threads, start time ticks, rss bytes,
    virtual size bytes) from ``/proc/<pid>/stat``; the name may contain spaces and
    parentheses."""
    open_paren = text.index("(")
    close_paren = text.rindex(")")
    name = text[open_paren + 1 : close_paren]
    fields = text[close_paren + 2 :].split()
    # fields[0] is field 3 (state) of proc(5); rss (field 24) is in pages
    return (name, fields[0], int(fields[1]), int(fields[11]) + int(fields[12]),
            int(fields[17]), int(fields[19]), int(fields[21]) * PAGE_SIZE, int(fields[20]))


def parse_statm(text: str) -> tuple[int, int]:
    """(vms, rss) in bytes from ``/proc/<pid>/statm``."""
    size, resident = text.split()[:2]
    return int(size) * PAGE_SIZE, int(resident) * PAGE_SIZE
