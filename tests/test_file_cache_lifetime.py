"""A sampler nobody closed must not keep its kernel files open for the life of the process:
the kept-open descriptors are plain numbers, closed when the cache is collected."""

from __future__ import annotations

import gc
import os
from pathlib import Path

from resguard._probes.files import FileCache
from resguard.snapshot import Sampler
from resguard.testing import KernelTree


def _open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()


def test_a_collected_file_cache_closes_its_descriptors(tmp_path: Path) -> None:
    path = tmp_path / "meminfo"
    path.write_text("MemTotal: 1 kB\n")
    before = _open_descriptors()
    cache = FileCache()
    assert cache.read(str(path)) == "MemTotal: 1 kB\n"
    assert len(_open_descriptors() - before) == 1
    del cache
    gc.collect()
    assert _open_descriptors() - before == set()


def test_samplers_made_and_dropped_in_a_loop_leak_no_descriptors(tmp_path: Path) -> None:
    tree = KernelTree(tmp_path)
    Sampler(tree.roots).sample()  # whatever a first sampler opens once (imports, caches)
    gc.collect()
    before = _open_descriptors()
    for _ in range(50):
        Sampler(tree.roots).sample()
    gc.collect()
    assert len(_open_descriptors() - before) <= 2


def test_a_closed_cache_can_be_collected_without_closing_twice(tmp_path: Path) -> None:
    path = tmp_path / "stat"
    path.write_text("cpu 1 2 3 4\n")
    cache = FileCache()
    cache.read(str(path))
    cache.close()
    other = os.open(str(path), os.O_RDONLY)  # may reuse the number the cache had
    try:
        del cache
        gc.collect()
        os.fstat(other)  # still open: the finalizer did not close a reused number
    finally:
        os.close(other)
