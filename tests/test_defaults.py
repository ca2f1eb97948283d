"""resguard._modules.defaults.made_once: the process-wide defaults (the sampler, the heat
reader, the process table behind top_processes) are made once per backend, also when
threads race for the first one."""

from __future__ import annotations

import threading

from resguard._modules.defaults import made_once


def test_threads_racing_for_the_first_default_share_one_made_once() -> None:
    made: dict[str, object] = {}
    calls: list[object] = []
    start = threading.Barrier(8)

    def make() -> object:
        value = object()
        calls.append(value)
        return value

    got: list[object] = []

    def ask() -> None:
        start.wait(timeout=10)
        for _ in range(200):
            got.append(made_once(made, "linux", make))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(calls) == 1
    assert set(map(id, got)) == {id(calls[0])}


def test_each_key_has_its_own_default_and_a_made_one_is_kept() -> None:
    made: dict[str, list[str]] = {}
    linux = made_once(made, "linux", lambda: ["linux"])
    assert made_once(made, "psutil", lambda: ["psutil"]) == ["psutil"]
    assert made_once(made, "linux", lambda: ["again"]) is linux
    assert made == {"linux": ["linux"], "psutil": ["psutil"]}


def test_the_snapshot_and_process_defaults_are_kept_per_backend() -> None:
    import resguard.processes as processes
    import resguard.snapshot as sensing

    assert sensing.default_sampler() is sensing.default_sampler()
    backend = sensing.default_backend()
    assert sensing._default_samplers[backend] is sensing.default_sampler()
    sensing.read_heat()
    reader = sensing._default_heat[backend]
    sensing.read_heat()
    assert sensing._default_heat[backend] is reader
    processes.top_processes(1)
    table = processes._default_tables[backend]
    processes.top_processes(1)
    assert processes._default_tables[backend] is table
