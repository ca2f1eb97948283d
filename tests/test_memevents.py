"""Kernel memory events (resguard._probes.memevents): v1 usage thresholds and OOM
notifications on a real child cgroup, v2 ``memory.events`` on a fixture tree the tests
rewrite, the host's PSI trigger, and how every missing piece degrades without raising or
leaking a descriptor."""

from __future__ import annotations

import gc
import os
import re
import select
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard._probes.memevents import (
    MAX_EDGES,
    PRESSURE_HOLDOFF_S,
    THRESHOLD_HOLDOFF_S,
    MemoryEvent,
    MemoryEvents,
    counter_events,
    nearest_edges,
    parse_memory_events,
    rearm_slack_bytes,
    rerooted,
    usage_thresholds,
)
from resguard.snapshot import MemoryInfo
from resguard.testing import ManualClock

from plugins.cgroup import MemoryCgroup
from plugins.integration import unavailable
from support import wait_until

MiB = 2**20

# A child that holds memory in steps: each line "N" on stdin adds N MiB (every page
# written), "free" drops it all; it answers "ok" once the pages are charged.
ALLOCATOR = """
import sys
held = []
for line in sys.stdin:
    if line.strip() == "free":
        held.clear()
    else:
        held.append(b"x" * (int(line) * 2**20))
    print("ok", flush=True)
"""


def _memory(detail: str, limit_bytes: int | None, source: str = "cgroup") -> MemoryInfo:
    return MemoryInfo(
        total=16 * 2**30,
        limit=limit_bytes,
        used=0,
        available=limit_bytes,
        percent=0.0,
        source=source,
        source_detail=detail,
        cgroup="/test",
    )


def _v1_events(cgroup: MemoryCgroup, limit_bytes: int) -> MemoryEvents:
    if cgroup.version != "v1":
        unavailable("these tests need cgroup v1 (the usage thresholds are v1's)")
    cgroup.set_limit(limit_bytes)
    events = MemoryEvents.open(
        _memory(str(cgroup.path / "memory.limit_in_bytes"), limit_bytes), None, psi=False
    )
    assert events.available, events.why_not
    return events


class Allocator:
    """The ALLOCATOR child inside a cgroup, driven a step at a time."""

    def __init__(self, cgroup: MemoryCgroup) -> None:
        self.process = cgroup.python(ALLOCATOR, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{command}\n".encode())
        self.process.stdin.flush()
        assert self.process.stdout.readline() == b"ok\n"


def _wait_for(events: MemoryEvents, kind: str, timeout_s: float = 10.0) -> tuple[MemoryEvent, ...]:
    """Poll the armed descriptors until *events* reports one of *kind* (every event read on
    the way is returned), or ``()`` once *timeout_s* has passed; as the Monitor does, the
    set is polled anew whenever its generation moved."""
    seen: list[MemoryEvent] = []
    generation, poller = -1, select.poll()
    deadline = time.monotonic() + timeout_s
    while (left_s := deadline - time.monotonic()) > 0:
        if events.generation != generation:
            generation, poller = events.generation, select.poll()
            for fd, mask in events.descriptors():
                poller.register(fd, mask)
        ready = poller.poll(max(left_s, 0.001) * 1000)
        seen.extend(events.read([fd for fd, _ in ready]))
        if any(event.kind == kind for event in seen):
            return tuple(seen)
    return ()


def _arm(events: MemoryEvents, edges_bytes: list[int], used_bytes: int) -> None:
    """Arm and wait for the worker to have registered them (milliseconds each)."""
    events.arm(edges_bytes, used_bytes)
    assert events.wait_armed(30.0)


def _armed_of(events: MemoryEvents, wanted: set[int], count: int) -> bool:
    return len(set(events.thresholds_bytes) & wanted) >= count


def _open_fds() -> int:
    """The process's open descriptors, once what earlier tests left is collected (the
    collector closing their leftovers mid-test must not move the count)."""
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


# --- cgroup v1, for real ------------------------------------------------------------------


def test_an_armed_edge_fires_when_the_child_crosses_it_and_arm_moves_it(
    memory_cgroup: MemoryCgroup,
) -> None:
    events = _v1_events(memory_cgroup, 256 * MiB)
    try:
        allocator = Allocator(memory_cgroup)
        _arm(events, [64 * MiB], memory_cgroup.usage_bytes())  # no cache: the gap is 0
        # the edges by the memory.used they stand for, so a user can check them (R3)
        assert events.armed[0].startswith("v1 usage thresholds at 1 (memory.used 64.0 MiB) on ")
        allocator.send("96")
        crossed = [e for e in _wait_for(events, "threshold") if e.kind == "threshold"]
        assert crossed
        assert crossed[0].detail.startswith(f"usage crossed {64 * MiB} B")
        assert crossed[0].source == str(memory_cgroup.path / "memory.usage_in_bytes")

        generation = events.generation
        _arm(events, [192 * MiB], memory_cgroup.usage_bytes())
        assert events.generation > generation
        assert events.thresholds_bytes == (192 * MiB,)
        allocator.send("free")  # back down through 64 MiB: no longer armed there
        assert _wait_for(events, "threshold", timeout_s=0.5) == ()
        allocator.send("224")
        crossed = [e for e in _wait_for(events, "threshold") if e.kind == "threshold"]
        assert crossed
        assert crossed[0].detail.startswith(f"usage crossed {192 * MiB} B")
    finally:
        events.close()


def test_a_gap_that_shrinks_within_the_slack_never_makes_the_crossing_late(
    memory_cgroup: MemoryCgroup,
) -> None:
    # issue 15 (R2 4): registered at edge + gap, a gap that reclaim shrank (by less than
    # the re-arm slack, 4 MiB here) let memory.used cross the edge with no event at all
    events = _v1_events(memory_cgroup, 256 * MiB)
    try:
        allocator = Allocator(memory_cgroup)
        allocator.send("1")
        usage = memory_cgroup.usage_bytes()
        edge = usage + 16 * MiB
        _arm(events, [edge], usage - 3 * MiB - 512 * 1024)  # 3.5 MiB of cache, it seems
        before = events.covered_edges_bytes
        assert before == (edge,)
        allocator.send("17")  # no cache after all: used = usage, 1 MiB past the edge
        assert memory_cgroup.usage_bytes() > edge
        crossed = [e for e in _wait_for(events, "threshold") if e.kind == "threshold"]
        assert crossed
        assert crossed[0].detail.startswith(f"usage crossed {edge} B")
        events.arm([edge], memory_cgroup.usage_bytes() - 3 * MiB - 512 * 1024)  # same wish
        assert events.covered_edges_bytes == ()  # passed: nothing wakes the loop there now
    finally:
        events.close()


def test_the_same_edges_and_gap_are_not_registered_again(memory_cgroup: MemoryCgroup) -> None:
    events = _v1_events(memory_cgroup, 256 * MiB)
    try:
        _arm(events, [64 * MiB, 128 * MiB], 0)
        before, generation = events.descriptors(), events.generation
        _arm(events, [128 * MiB, 64 * MiB], 0)  # the same set, the same gap: nothing to do
        assert events.descriptors() == before
        assert events.generation == generation
    finally:
        events.close()


def test_a_wish_changing_faster_than_the_kernel_registers_never_piles_up_thresholds(
    memory_cgroup: MemoryCgroup,
) -> None:
    events = _v1_events(memory_cgroup, 256 * MiB)
    try:
        used = memory_cgroup.usage_bytes()
        wish: list[int] = []
        for step in range(12):  # each wish is replaced when a few of it are armed
            wish = [used + (step * MAX_EDGES + n) * 64 * 1024 for n in range(1, MAX_EDGES + 1)]
            events.arm(wish, used)
            wanted = set(wish)
            wait_until(
                partial(_armed_of, events, wanted, 3),
                timeout_s=30,
                what="a few thresholds of the wish armed",
            )
            assert len(events.thresholds_bytes) <= MAX_EDGES
        assert events.wait_armed(30.0)
        assert events.thresholds_bytes == tuple(wish)
        assert events.armed[0].startswith(f"v1 usage thresholds at {MAX_EDGES} (memory.used ")
        assert f"and {MAX_EDGES - 8} more) on " in events.armed[0]  # a readable line
    finally:
        events.close()


def test_rearming_after_the_limit_changed_clamps_to_the_new_limit_and_fires(
    memory_cgroup: MemoryCgroup,
) -> None:
    events = _v1_events(memory_cgroup, 256 * MiB)
    try:
        allocator = Allocator(memory_cgroup)
        _arm(events, [192 * MiB], memory_cgroup.usage_bytes())
        memory_cgroup.set_limit(128 * MiB)
        _arm(events, [200 * MiB, 64 * MiB], memory_cgroup.usage_bytes())  # 200: past it
        assert events.thresholds_bytes == (64 * MiB, 128 * MiB - 1)
        allocator.send("80")
        crossed = [e for e in _wait_for(events, "threshold") if e.kind == "threshold"]
        assert crossed
        assert crossed[0].detail.startswith(f"usage crossed {64 * MiB} B")
    finally:
        events.close()


def test_an_oom_kill_in_the_cgroup_is_reported_as_oom_kill(memory_cgroup: MemoryCgroup) -> None:
    events = _v1_events(memory_cgroup, 64 * MiB)
    try:
        memory_cgroup.python("b = b'x' * (256 * 2**20)")
        seen = _wait_for(events, "oom_kill")
        kills = [event for event in seen if event.kind == "oom_kill"]
        assert kills, seen
        assert kills[0].count >= 1
        assert kills[0].source == str(memory_cgroup.path / "memory.oom_control")
        assert kills[0].detail.startswith("oom_kill 0 -> ")
        assert memory_cgroup.oom_kills() >= 1
    finally:
        events.close()


def test_an_oom_that_kills_is_both_an_oom_and_an_oom_kill_however_late_it_is_read(
    memory_cgroup: MemoryCgroup,
) -> None:
    # R1 F: the OOM itself was an "oom" event only when its eventfd was read before the
    # victim was chosen; read after (here: once the kill is counted), it was left out
    events = _v1_events(memory_cgroup, 64 * MiB)
    try:
        memory_cgroup.python("b = b'x' * (256 * 2**20)").wait(timeout=30)
        wait_until(lambda: memory_cgroup.oom_kills() >= 1, timeout_s=10, what="the kill")
        said = events.read([fd for fd, _ in events.descriptors()])
        assert [event.kind for event in said if event.kind.startswith("oom")] == [
            "oom",
            "oom_kill",
        ]
    finally:
        events.close()


def test_an_oom_without_a_kill_is_reported_as_oom(memory_cgroup: MemoryCgroup) -> None:
    events = _v1_events(memory_cgroup, 32 * MiB)
    try:
        (memory_cgroup.path / "memory.oom_control").write_text("1")  # no OOM killer here
        hog = memory_cgroup.python("b = b'x' * (128 * 2**20)")  # it waits in the OOM
        seen = _wait_for(events, "oom")
        hog.kill()
        ooms = [event for event in seen if event.kind.startswith("oom")]
        assert ooms, seen
        assert ooms[0].kind == "oom"  # the kernel killed nothing
        assert ooms[0].detail == "under_oom"
        assert ooms[0].source == str(memory_cgroup.path / "memory.oom_control")
        assert memory_cgroup.oom_kills() == 0
    finally:
        events.close()


def test_a_threshold_that_fired_rests_for_its_hold_off_then_reports_what_it_counted(
    memory_cgroup: MemoryCgroup,
) -> None:
    if memory_cgroup.version != "v1":
        unavailable("these tests need cgroup v1 (the usage thresholds are v1's)")
    memory_cgroup.set_limit(256 * MiB)
    clock = ManualClock()
    detail = str(memory_cgroup.path / "memory.limit_in_bytes")
    events = MemoryEvents.open(_memory(detail, 256 * MiB), None, psi=False, clock=clock)
    try:
        allocator = Allocator(memory_cgroup)
        _arm(events, [64 * MiB], memory_cgroup.usage_bytes())
        allocator.send("96")
        assert any(e.kind == "threshold" for e in _wait_for(events, "threshold"))
        assert events.thresholds_bytes == (64 * MiB,)  # still armed ...
        polled = {fd for fd, _ in events.descriptors()}
        allocator.send("free")  # ... and counting: down through it again
        assert _wait_for(events, "threshold", timeout_s=0.3) == ()  # but not polled yet
        clock.advance(THRESHOLD_HOLDOFF_S)
        assert events.read() == ()  # every tick reads: the hold-off is over
        assert len({fd for fd, _ in events.descriptors()} - polled) == 1
        crossed = [e for e in _wait_for(events, "threshold") if e.kind == "threshold"]
        assert crossed  # the crossing made while it rested
        assert crossed[0].detail.startswith(f"usage crossed {64 * MiB} B")
    finally:
        events.close()


def test_a_pressure_level_that_fired_is_not_polled_until_its_hold_off_is_over(
    memory_cgroup: MemoryCgroup,
) -> None:
    if memory_cgroup.version != "v1":
        unavailable("this test needs cgroup v1 (memory.pressure_level is v1's)")
    memory_cgroup.set_limit(32 * MiB)
    clock = ManualClock()
    detail = str(memory_cgroup.path / "memory.limit_in_bytes")
    events = MemoryEvents.open(_memory(detail, 32 * MiB), None, psi=False, clock=clock)
    try:
        levels = {fd for fd, _ in events.descriptors()}
        memory_cgroup.python("b = b'x' * (128 * 2**20)")  # reclaim, then the OOM killer
        pressure = [e for e in _wait_for(events, "pressure") if e.kind == "pressure"]
        assert pressure
        assert pressure[0].detail.startswith("pressure_level ")
        # R3: one wake-up is one event; the kernel's signals (hundreds) are in its detail
        assert all(event.count == 1 for event in pressure)
        assert re.search(r"\(\d+ signals?\)$", pressure[0].detail)
        muted = levels - {fd for fd, _ in events.descriptors()}
        assert muted  # the level that fired is left out of the poll for now
        clock.advance(PRESSURE_HOLDOFF_S / 2)
        events.read()
        assert levels - {fd for fd, _ in events.descriptors()} == muted
        clock.advance(PRESSURE_HOLDOFF_S / 2)
        events.read()  # every tick reads: the hold-off is over
        assert {fd for fd, _ in events.descriptors()} >= muted
    finally:
        events.close()


def test_a_forked_child_drops_its_copies_and_leaves_the_parents_thresholds_armed(
    memory_cgroup: MemoryCgroup,
) -> None:
    events = _v1_events(memory_cgroup, 256 * MiB)
    try:
        allocator = Allocator(memory_cgroup)
        _arm(events, [64 * MiB], memory_cgroup.usage_bytes())
        pid = os.fork()
        if pid == 0:  # the child: its copies are closed at the fork; close() is safe too
            nothing_left = events.descriptors() == () and not events.available
            events.close()
            events.close()
            os._exit(0 if nothing_left and events.descriptors() == () else 1)
        assert os.waitpid(pid, 0)[1] == 0
        allocator.send("96")
        assert any(e.kind == "threshold" for e in _wait_for(events, "threshold"))
    finally:
        events.close()


def test_open_arm_read_close_cycles_leave_no_descriptor_open(memory_cgroup: MemoryCgroup) -> None:
    _v1_events(memory_cgroup, 256 * MiB).close()  # the imports and the first open are paid
    before = _open_fds()
    for step in range(5):
        events = _v1_events(memory_cgroup, 256 * MiB)
        events.arm([(step + 1) * 8 * MiB * n for n in range(1, 40)], 0)
        events.arm([16 * MiB], 0)
        events.read([fd for fd, _ in events.descriptors()])
        events.close()
        events.close()
    assert _open_fds() == before
    assert not any(t.name == "resguard-memevents" for t in threading.enumerate())


def test_arm_read_and_close_from_many_threads_never_raise_nor_leave_anything_open(
    memory_cgroup: MemoryCgroup,
) -> None:
    _v1_events(memory_cgroup, 256 * MiB).close()  # the imports and the first open are paid
    before = _open_fds()
    errors: list[BaseException] = []
    for round_ in range(3):
        events = _v1_events(memory_cgroup, 256 * MiB)

        def hammer(seed: int, events: MemoryEvents = events) -> None:
            try:
                for step in range(200):
                    edges = [((seed + step + n) % 200 + 1) * MiB for n in range(0, 60, 7)]
                    events.arm(edges, step * 4096)  # a moving gap: re-registrations
                    events.read([fd for fd, _ in events.descriptors()])
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        if round_:  # close while they run (round 0: after them)
            events.close()
        for thread in threads:
            thread.join(timeout=60)
        events.close()
        assert events.descriptors() == ()
    assert errors == []
    assert _open_fds() == before
    assert not any(t.name == "resguard-memevents" for t in threading.enumerate())


def test_a_set_nobody_closed_is_closed_with_its_worker_when_collected(
    memory_cgroup: MemoryCgroup,
) -> None:
    _v1_events(memory_cgroup, 256 * MiB).close()  # the imports and the first open are paid
    before = _open_fds()
    events = _v1_events(memory_cgroup, 256 * MiB)
    _arm(events, [64 * MiB, 96 * MiB], memory_cgroup.usage_bytes())
    assert _open_fds() > before
    del events
    gc.collect()
    assert _open_fds() == before
    assert not any(t.name == "resguard-memevents" for t in threading.enumerate())


# --- degradation --------------------------------------------------------------------------


def test_a_cgroup_removed_while_armed_raises_nothing_and_leaks_nothing(
    memory_cgroup: MemoryCgroup,
) -> None:
    before = _open_fds()
    events = _v1_events(memory_cgroup, 256 * MiB)
    _arm(events, [64 * MiB, 128 * MiB], memory_cgroup.usage_bytes())
    armed_on_a_live_cgroup = not events.gone
    assert armed_on_a_live_cgroup
    memory_cgroup.path.rmdir()  # no process in it: the kernel lets it go while armed
    assert events.gone
    # the removal signals each eventfd once: drained, and none of it is an event (R1 D)
    assert _wait_for(events, "threshold", timeout_s=0.5) == ()
    assert _wait_for(events, "oom", timeout_s=0.2) == ()
    memory_cgroup.path.mkdir()  # another cgroup at the same path
    assert events.gone
    memory_cgroup.path.rmdir()
    events.arm([32 * MiB], 0)  # its usage file reads ENODEV now: nothing to arm
    assert events.read([fd for fd, _ in events.descriptors()]) == ()
    events.close()
    assert _open_fds() == before


@pytest.mark.parametrize(("module", "name"), [(os, "eventfd"), (select, "poll")])
def test_without_eventfd_or_poll_in_this_python_nothing_is_armed_and_it_says_so(
    memory_cgroup: MemoryCgroup, monkeypatch: pytest.MonkeyPatch, module: object, name: str
) -> None:
    if memory_cgroup.version != "v1":
        unavailable("this test needs cgroup v1 (eventfds are v1's)")
    memory_cgroup.set_limit(256 * MiB)
    monkeypatch.delattr(module, name)  # an old Python, a platform without them
    before = _open_fds()
    memory = _memory(str(memory_cgroup.path / "memory.limit_in_bytes"), 256 * MiB)
    events = MemoryEvents.open(memory, "system", psi=False)
    assert not events.available
    assert events.descriptors() == ()
    assert events.armed == ()
    assert events.why_not is not None
    assert f"no {'os.eventfd' if name == 'eventfd' else 'select.poll'}" in events.why_not
    events.close()
    assert _open_fds() == before


def test_off_linux_nothing_is_armed_and_it_says_on_what(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    events = MemoryEvents.open(_memory("/proc/meminfo", 1, "host"), "system")
    assert not events.available
    assert events.why_not == "there are no kernel memory events on darwin."


def _v1_tree(tmp_path: Path, *, control: bool) -> Path:
    directory = tmp_path / "cgroup" / "memory" / "app"
    directory.mkdir(parents=True)
    (directory / "memory.limit_in_bytes").write_text(f"{256 * MiB}\n")
    (directory / "memory.usage_in_bytes").write_text(f"{64 * MiB}\n")
    (directory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    if control:
        (directory / "cgroup.event_control").write_text("")
    return directory


def test_a_v1_cgroup_without_event_control_arms_nothing_and_says_why(tmp_path: Path) -> None:
    before = _open_fds()
    directory = _v1_tree(tmp_path, control=False)
    memory = _memory(str(directory / "memory.limit_in_bytes"), 256 * MiB)
    events = MemoryEvents.open(memory, None, psi=False, root=str(tmp_path))
    assert not events.available
    assert events.why_not is not None
    assert "has no cgroup.event_control" in events.why_not
    assert events.descriptors() == ()
    assert events.read() == ()
    events.arm([64 * MiB], 0)  # nothing to arm: no error either
    events.close()
    assert _open_fds() == before


def test_a_plain_file_standing_for_event_control_is_not_taken_for_the_kernels(
    tmp_path: Path,
) -> None:
    before = _open_fds()
    directory = _v1_tree(tmp_path, control=True)
    memory = _memory(str(directory / "memory.limit_in_bytes"), 256 * MiB)
    events = MemoryEvents.open(memory, None, psi=False, root=str(tmp_path))
    assert not events.available
    assert events.why_not is not None
    assert "not a kernel control file" in events.why_not
    events.close()
    assert _open_fds() == before


def test_without_permission_on_event_control_nothing_is_armed_and_it_says_so(
    memory_cgroup: MemoryCgroup,
) -> None:
    if memory_cgroup.version != "v1":
        unavailable("this test needs cgroup v1 (cgroup.event_control is v1's)")
    memory_cgroup.set_limit(256 * MiB)
    detail = str(memory_cgroup.path / "memory.limit_in_bytes")
    code = (  # as nobody: cgroup.event_control is writable by its owner (root) only
        "import os, select\n"
        "from resguard._probes.memevents import MemoryEvents\n"
        "from resguard.snapshot import MemoryInfo\n"
        "os.setgid(65534)\nos.setuid(65534)\n"  # imported as root: nobody may not read them
        f"m = MemoryInfo(total=1, limit={256 * MiB}, used=0, available=1, percent=0.0,"
        f" source='cgroup', source_detail={detail!r}, cgroup='/t')\n"
        "e = MemoryEvents.open(m, None, psi=False)\n"
        "e.arm([1], 0)\nprint(e.available, e.why_not)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("False cannot write "), result.stdout
    assert "Permission denied" in result.stdout


def test_the_host_arms_a_psi_trigger_and_says_which_window_the_kernel_took() -> None:
    if not os.path.exists("/proc/pressure/memory"):
        unavailable("this kernel has no /proc/pressure/memory")
    before = _open_fds()
    events = MemoryEvents.open(_memory("/proc/meminfo", 16 * 2**30, "host"), "system")
    try:
        assert events.available, events.why_not
        assert len(events.armed) == 1
        assert events.armed[0].startswith("PSI some ")
        assert events.armed[0].endswith("s on /proc/pressure/memory")
        [(fd, mask)] = events.descriptors()
        assert mask == select.POLLPRI
        events.arm([1 * MiB], 0)  # the host has nothing to arm per byte
        assert events.descriptors() == ((fd, mask),)
    finally:
        events.close()
    assert _open_fds() == before


def test_the_host_without_psi_arms_nothing_and_says_why() -> None:
    events = MemoryEvents.open(_memory("/proc/meminfo", 16 * 2**30, "host"), "system", psi=False)
    assert not events.available
    assert events.armed == ()
    assert events.why_not is not None
    assert "no cgroup limit binds" in events.why_not


def test_a_fixture_pressure_file_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    pressure = tmp_path / "proc" / "pressure" / "memory"
    pressure.parent.mkdir(parents=True)
    text = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n"
    pressure.write_text(text)
    events = MemoryEvents.open(_memory("/proc/meminfo", 1, "host"), "system", root=str(tmp_path))
    assert not events.available
    assert events.why_not is not None
    assert "not a kernel PSI file" in events.why_not
    assert pressure.read_text() == text


# --- cgroup v2 on a fixture tree ----------------------------------------------------------

EVENTS_TEXT = "low 0\nhigh {high}\nmax 0\noom 0\noom_kill {kills}\noom_group_kill 0\n"


def _v2_tree(tmp_path: Path) -> tuple[Path, MemoryEvents]:
    directory = tmp_path / "cgroup" / "app"
    directory.mkdir(parents=True)
    (directory / "memory.max").write_text(f"{256 * MiB}\n")
    (directory / "memory.events").write_text(EVENTS_TEXT.format(high=2, kills=0))
    memory = _memory(str(directory / "memory.max"), 256 * MiB)
    events = MemoryEvents.open(memory, str(directory), psi=False, root=str(tmp_path))
    return directory / "memory.events", events


def test_v2_memory_events_report_the_growth_of_each_counter(tmp_path: Path) -> None:
    path, events = _v2_tree(tmp_path)
    try:
        assert events.available
        assert events.armed == (f"v2 memory.events on {path}",)
        assert events.read() == ()  # the first read at open was the baseline
        path.write_text(EVENTS_TEXT.format(high=5, kills=1))
        assert events.read() == (
            MemoryEvent("high", 3, str(path), "high 2 -> 5"),
            MemoryEvent("oom_kill", 1, str(path), "oom_kill 0 -> 1"),
        )
        assert events.read() == ()  # unchanged content: nothing new
    finally:
        events.close()


def test_a_garbled_memory_events_gives_no_event_and_the_next_good_read_counts(
    tmp_path: Path,
) -> None:
    path, events = _v2_tree(tmp_path)
    try:
        for garbage in ("high x\n", "high 9", "", "\x00\xff\n" * 3000):
            path.write_text(garbage)
            assert events.read() == ()
        path.write_text(EVENTS_TEXT.format(high=4, kills=0))
        assert [(e.kind, e.count) for e in events.read()] == [("high", 2)]
    finally:
        events.close()


def test_v2_polls_memory_events_for_priority_and_error_and_arm_is_a_no_op(
    tmp_path: Path,
) -> None:
    _path, events = _v2_tree(tmp_path)
    try:
        [(_, mask)] = events.descriptors()
        assert mask == select.POLLPRI | select.POLLERR
        events.arm([64 * MiB], 0)
        assert events.generation == 0
        assert len(events.descriptors()) == 1
    finally:
        events.close()
    assert events.descriptors() == ()
    assert events.read() == ()
    assert not events.available


# --- the pure parts ---------------------------------------------------------------------

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)


@given(st.dictionaries(NAMES, st.integers(0, 2**63)))
def test_memory_events_text_parses_back_to_its_counters(counters: dict[str, int]) -> None:
    text = "".join(f"{name} {value}\n" for name, value in counters.items())
    assert parse_memory_events(text) == (counters or None)


@given(st.text(max_size=200))
def test_any_text_parses_to_counters_or_none_without_raising(text: str) -> None:
    parsed = parse_memory_events(text)
    assert parsed is None or all(value >= 0 for value in parsed.values())
    if parsed is not None:
        assert text.endswith("\n")
        assert len(parsed) <= text.count("\n")


@given(
    st.dictionaries(st.sampled_from(["low", "high", "max", "oom", "oom_kill"]), st.integers(0, 99)),
    st.dictionaries(st.sampled_from(["low", "high", "max", "oom", "oom_kill"]), st.integers(0, 99)),
)
def test_counter_events_are_exactly_the_counters_that_grew(
    before: dict[str, int], after: dict[str, int]
) -> None:
    found = {event.kind: event.count for event in counter_events(before, after, "f")}
    grown = {
        name: after[name] - before[name]
        for name in ("high", "max", "oom", "oom_kill")
        if name in before and name in after and after[name] > before[name]
    }
    assert found == grown


@given(st.lists(st.integers(0, 2**40)), st.integers(0, 2**40), st.integers(1, 40))
def test_the_nearest_edges_are_kept_and_no_more_than_asked(
    edges: list[int], used_bytes: int, count: int
) -> None:
    kept = nearest_edges(edges, used_bytes, count)
    assert list(kept) == sorted(set(kept))
    assert set(kept) <= set(edges)
    assert len(kept) == min(count, len(set(edges)))
    if kept:
        farthest = max(abs(edge - used_bytes) for edge in kept)
        assert all(abs(edge - used_bytes) >= farthest for edge in set(edges) - set(kept))


def test_nearest_edges_leaves_out_what_is_not_a_byte_count() -> None:
    assert nearest_edges([-1, True, 2.5, "3", 7, 7], 0) == (7,)
    assert MAX_EDGES == 32


@given(
    st.lists(st.integers(0, 2**34), max_size=50),
    st.integers(0, 2**32),
    st.one_of(st.none(), st.integers(0, 2**34)),
)
def test_usage_thresholds_shift_by_the_gap_keep_order_and_stay_below_the_limit(
    edges: list[int], gap_bytes: int, limit_bytes: int | None
) -> None:
    wanted = usage_thresholds(edges, gap_bytes, limit_bytes)
    if limit_bytes is not None and limit_bytes < 2:
        assert wanted == {}
        return
    assert sorted(edge for group in wanted.values() for edge in group) == sorted(set(edges))
    top = (limit_bytes - 1) if limit_bytes is not None else None
    for value, group in wanted.items():
        assert value >= 1
        assert top is None or value <= top
        for edge in group:
            expected = max(edge + gap_bytes, 1)
            assert value == (expected if top is None else min(expected, top))
    values = [value for value, _ in sorted(wanted.items(), key=lambda item: min(item[1]))]
    assert values == sorted(values)  # a higher edge never gets a lower threshold


@given(st.text(alphabet="/ab.", max_size=20), st.sampled_from(["/", "/tmp/tree", "/tmp/tree/"]))
def test_rerooting_is_idempotent_and_stays_under_the_root(path: str, root: str) -> None:
    once = rerooted(path, root)
    assert rerooted(once, root) == once
    if root != "/":
        assert once.startswith("/tmp/tree/") or once == "/tmp/tree"
    else:
        assert once == path


def test_the_rearm_slack_is_one_percent_of_the_limit_and_at_least_four_mib() -> None:
    assert rearm_slack_bytes(None) == 4 * MiB
    assert rearm_slack_bytes(100 * MiB) == 4 * MiB
    assert rearm_slack_bytes(1000 * MiB) == 10 * MiB
