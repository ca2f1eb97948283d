"""The frame of ``resguard watch`` built sans I/O (:mod:`resguard.cli._view`) from real
snapshots and real process tables of this machine: what it shows, how it sorts and marks,
what it hides, and that every line fits and nothing a process wrote reaches it raw. The
JSON update and the piped line are checked from the same states."""

from __future__ import annotations

import os
import subprocess
import sys
import unicodedata
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resguard as rg
from resguard._modules.render import printable
from resguard.cli._view import (
    FOOTER,
    ViewOptions,
    build_frame,
    cells,
    choose_rows,
    fit,
)
from resguard.cli.watch import format_line, update
from resguard.monitor import State
from resguard.processes import ProcessTable, is_kernel_thread
from resguard.rules import Breach, Level, Offender, Verdict
from resguard.snapshot import FanSpeed, HeatInfo, OllamaModelInfo, TemperatureSensor
from resguard.testing.nvml import make_gpu

HOSTILE = ("/usr/bin/evil", "line\none", "\x1b[31mred\x1b[0m", "tab\there", "c1\x9bx", "bidi\u202e")


WATCHER_PID = 2**22 + 1  # above Linux's PID_MAX_LIMIT: no real process has it
GIB = 1 << 30


@pytest.fixture(scope="module")
def rows() -> tuple[Any, ...]:
    """This machine's process table, CPU measured over a short real window."""
    from resguard.cli._args import over_window

    table = ProcessTable()
    return tuple(over_window(0.3, table.sample))


def _breach(
    metric: str, offenders: tuple[Offender, ...] = (), level: Level = Level.WARNING
) -> Breach:
    return Breach(
        rule=f"{metric}-high",
        metric=metric,
        op=">=",
        value=90.0,
        threshold=85.0,
        level=level,
        since=0.0,
        since_wall=0.0,
        held_s=5.0,
        unit="percent",
        offenders=offenders,
    )


def _state(
    rows: tuple[Any, ...], *breaches: Breach, unknown: tuple[str, ...] = (), **fields: Any
) -> State:
    taken = rg.snapshot()
    # taken by another process (resguard watch) than this test's, whose row the tests use:
    # the view never lists the process that took the snapshot
    watcher = attrs.evolve(taken.process, pid=WATCHER_PID)
    snapshot = attrs.evolve(taken, processes=rows, process=watcher, **fields)
    level = max((breach.level for breach in breaches), default=Level.OK)
    return State(snapshot=snapshot, verdict=Verdict(level, breaches, unknown), sequence=1)


def _offender(row: Any, value: float = 50.0) -> Offender:
    return Offender(pid=row.pid, name=row.name, value=value, since=0.0)


def _hostile(rows: tuple[Any, ...]) -> Any:
    """A real row of this test's process with a command line full of control characters
    (what a process may put in its argv)."""
    (mine,) = [row for row in rows if row.pid == os.getpid()]
    return attrs.evolve(mine, cmdline=HOSTILE, name="evil\x1b[2J")


# ---------------------------------------------------------------- text safety ---


@settings(max_examples=300)
@given(st.text())
def test_printable_text_holds_no_control_character(text: str) -> None:
    safe = printable(text)
    assert safe.isprintable()
    assert all(unicodedata.category(char) not in ("Cc", "Cf", "Cs") for char in safe)
    assert printable(safe) == safe


def test_printable_writes_each_control_visibly() -> None:
    assert printable("a\nb\tc\rd\x1b[31me\x9bf\x7f") == "a\\nb\\tc\\rd\\x1b[31me\\x9bf\\x7f"
    assert printable("bidi\u202eend") == "bidi\\u202eend"
    assert printable("plain text, ünïcode 界") == "plain text, ünïcode 界"


@settings(max_examples=300)
@given(st.text(), st.integers(min_value=1, max_value=200))
def test_fit_cuts_to_the_width_with_an_ellipsis(text: str, width: int) -> None:
    safe = printable(text)
    cut = fit(safe, width)
    assert cells(cut) <= width
    if cells(safe) <= width:
        assert cut == safe
    else:
        assert cut.endswith("…")


def test_wide_characters_take_two_cells() -> None:
    assert cells("界界") == 4
    assert fit("界" * 10, 5) == "界界…"


# ---------------------------------------------------------------- the frame ---


@settings(max_examples=60, deadline=None)
@given(width=st.integers(min_value=1, max_value=220), height=st.integers(min_value=1, max_value=60))
def test_every_line_of_a_frame_fits_and_the_footer_stays(
    rows: tuple[Any, ...], width: int, height: int
) -> None:
    hostile = _hostile(rows)
    table = (*rows, hostile)
    breach = _breach("memory.percent", (_offender(hostile),))
    state = _state(table, breach, unknown=("psi: gone\x1b[2J",) * 3)
    frame = build_frame(
        state, choose_rows(state, ViewOptions(rows=50)), ViewOptions(), width, height
    )
    lines = frame.plain().split("\n")
    assert len(lines) <= max(height, 3)
    assert all(cells(line) <= max(width, 20) for line in lines)
    assert all(line.isprintable() for line in lines)
    assert FOOTER.startswith(lines[-1].rstrip("…"))


def test_an_80_by_24_frame_reads_well(rows: tuple[Any, ...]) -> None:
    state = _state(rows)
    options = ViewOptions(rows=8)
    text = build_frame(state, choose_rows(state, options), options, 80, 24).plain()
    lines = text.split("\n")
    assert lines[0].startswith("resguard watch ")
    assert "verdict: OK" in lines[0]
    assert lines[-1] == FOOTER
    assert any(line.startswith("memory  ") for line in lines)
    assert any(line.startswith("cpu     ") for line in lines)
    (header,) = [line for line in lines if line.split()[:1] == ["PID"]]
    assert header.split() == ["PID", "CPU%", "RSS", "USER", "COMMAND"]  # no count column
    assert not any(line.startswith("process  pid") for line in lines)  # not resguard itself
    assert len(lines) <= 24


def test_a_hostile_command_line_is_escaped_in_the_frame(rows: tuple[Any, ...]) -> None:
    hostile = _hostile(rows)
    state = _state((*rows, hostile), _breach("memory.percent", (_offender(hostile),)))
    options = ViewOptions(rows=len(rows) + 1)
    text = build_frame(state, choose_rows(state, options), options, 300, 1000).plain()
    assert "line\\none" in text
    assert "\\x1b[31mred\\x1b[0m" in text
    assert "tab\\there" in text
    assert "\x1b" not in text
    assert "\t" not in text
    assert "\u202e" not in text
    assert "evil\\x1b[2J" in text  # the breach's culprit, named in its message


def test_a_memory_breach_sorts_by_rss_and_marks_its_culprits(rows: tuple[Any, ...]) -> None:
    user_rows = [row for row in rows if not is_kernel_thread(row)]
    small = min(user_rows, key=lambda row: row.rss)  # far below the top rows by memory
    state = _state(rows, _breach("memory.percent", (_offender(small),)))
    chosen = choose_rows(state, ViewOptions(rows=5))
    assert small.pid in [row.pid for row in chosen]  # a culprit is never cut off
    others = [row.rss for row in chosen if row.pid != small.pid]
    assert others == sorted(others, reverse=True)
    assert others[0] == max(row.rss for row in user_rows)
    frame = build_frame(state, chosen, ViewOptions(rows=5), 100, 40).plain().split("\n")
    marked = [line for line in frame if line.startswith("* ")]
    assert [line.split()[1] for line in marked] == [str(small.pid)]
    assert any("processes by memory (in breach)" in line for line in frame)


def test_a_cpu_breach_sorts_by_cpu_and_a_key_overrides_it(rows: tuple[Any, ...]) -> None:
    state = _state(rows, _breach("cpu.percent"))
    by_cpu = [row.cpu_percent for row in choose_rows(state, ViewOptions(rows=10))]
    assert by_cpu == sorted(by_cpu, reverse=True)
    memory_state = _state(rows, _breach("memory.percent"))
    by_key = choose_rows(memory_state, ViewOptions(rows=10, sort="cpu"))
    assert [row.cpu_percent for row in by_key] == sorted(
        (row.cpu_percent for row in by_key), reverse=True
    )
    by_m = [row.rss for row in choose_rows(state, ViewOptions(rows=10, sort="memory"))]
    assert by_m == sorted(by_m, reverse=True)


def test_kernel_threads_are_hidden_unless_all(rows: tuple[Any, ...]) -> None:
    kernel = [row for row in rows if is_kernel_thread(row)]
    if not kernel:
        pytest.skip("this machine shows no kernel threads (a container's /proc)")
    state = _state(rows)
    hidden = choose_rows(state, ViewOptions(rows=len(rows)))
    shown = choose_rows(state, ViewOptions(rows=len(rows), show_all=True))
    assert not any(is_kernel_thread(row) for row in hidden)
    assert {row.pid for row in kernel} <= {row.pid for row in shown}
    assert len(shown) == len(rows)


def test_the_processes_of_the_cgroup_when_the_limit_is_a_cgroups(rows: tuple[Any, ...]) -> None:
    snap = rg.snapshot()
    memory = attrs.evolve(snap.memory, cgroup="/resguard-test", source="cgroup")
    state = _state(rows, memory=memory, cgroup_pids=(os.getpid(),))
    chosen = choose_rows(state, ViewOptions(rows=20))
    assert [row.pid for row in chosen] == [os.getpid()]
    text = build_frame(state, chosen, ViewOptions(), 100, 40).plain()
    assert "processes of cgroup /resguard-test" in text
    host = _state(rows, memory=memory, cgroup_pids=None)  # not known: the host's table
    assert len(choose_rows(host, ViewOptions(rows=20))) > 1


def test_heat_shows_the_hottest_sensor_and_the_fastest_fan_as_snapshot_does(
    rows: tuple[Any, ...],
) -> None:
    """One heat formatter for watch and snapshot (R3 D9: "85°C" beside "85 °C")."""
    from resguard.cli import format_snapshot

    heat = HeatInfo.from_readings(
        (
            TemperatureSensor("acpitz", "temp1", 48.0, None, None),
            TemperatureSensor("coretemp", "Package id 0", 71.0, 80.0, 100.0),
        ),
        (FanSpeed("thinkpad", "fan1", 2400.0), FanSpeed("thinkpad", "fan2", 1800.0)),
        None,
        "hwmon",
    )
    text = build_frame(_state(rows, heat=heat), [], ViewOptions(), 120, 40).plain()
    shown = "71 °C coretemp Package id 0 (high 80 °C); fan 2400 rpm thinkpad fan1"
    assert f"heat    {shown}\n" in text
    assert f"heat     {shown} (from hwmon)" in format_snapshot(_state(rows, heat=heat).snapshot)
    bare = HeatInfo.from_readings((), (), None, "hwmon")
    assert (
        "heat    no temperature sensor or fan readable here"
        in build_frame(_state(rows, heat=bare), [], ViewOptions(), 120, 40).plain()
    )


def test_ollama_models_with_their_size_and_idle_time(rows: tuple[Any, ...]) -> None:
    now = rg.snapshot().taken_at
    models = (
        OllamaModelInfo("llama3.2:1b", 1_300_000_000, 0, now + 240, now - 300),
        OllamaModelInfo("qwen2:7b", 4_700_000_000, 0, now + 240, None),
    )
    state = _state(rows, ollama=models)
    state = attrs.evolve(state, snapshot=attrs.evolve(state.snapshot, taken_at=now))
    text = build_frame(state, [], ViewOptions(), 120, 40).plain()
    assert "ollama  llama3.2:1b  1.2 GiB  100% CPU  idle 5m00s" in text
    assert "ollama  qwen2:7b  4.4 GiB  100% CPU  idle unknown" in text  # no idle: no evidence
    assert (
        "ollama" not in build_frame(_state(rows, ollama=None), [], ViewOptions(), 120, 40).plain()
    )


def test_ollama_models_show_their_cpu_gpu_split_as_ollama_ps(rows: tuple[Any, ...]) -> None:
    now = rg.snapshot().taken_at
    models = (
        OllamaModelInfo("gpt-oss:20b", 14_000_000_000, 14_000_000_000, now + 240, now),
        OllamaModelInfo("qwen2:72b", 40_000_000_000, 20_800_000_000, now + 240, now),
    )
    text = build_frame(_state(rows, ollama=models), [], ViewOptions(), 120, 40).plain()
    assert "ollama  gpt-oss:20b  13.0 GiB  100% GPU  idle" in text
    assert "ollama  qwen2:72b  37.3 GiB  48%/52% CPU/GPU  idle" in text


def test_gpus_are_shown_with_memory_utilization_and_temperature(rows: tuple[Any, ...]) -> None:
    gpus = (
        make_gpu(0, used_percent=50, total_bytes=80 * GIB, utilization_percent=45),
        make_gpu(1, used_percent=0, temperature_celsius=None, processes=[(7, GIB)]),
    )
    lines = build_frame(_state(rows, gpus=gpus), [], ViewOptions(), 120, 40).plain().split("\n")
    assert "gpu0    NVIDIA Fake GPU: 40.0 GiB of 80.0 GiB (50.0%), 45% busy, 45 °C" in lines
    assert "gpu1    NVIDIA Fake GPU: 0 B of 16.0 GiB (0.0%), 10% busy, ? °C, 1 process" in lines
    none = build_frame(_state(rows, gpus=()), [], ViewOptions(), 120, 40).plain()
    assert "gpu     NVML reports no GPU" in none
    unknown = build_frame(_state(rows, gpus=None), [], ViewOptions(), 120, 40).plain()
    assert "gpu" not in unknown.replace("GiB", "")  # most machines: no NVML, nothing to say


def test_the_line_and_json_carry_the_fullest_gpus_share(rows: tuple[Any, ...]) -> None:
    gpus = (make_gpu(0, used_percent=30), make_gpu(1, used_percent=91))
    state = _state(rows, gpus=gpus)
    assert " vram 91% " in format_line(state) + " "
    data = update(state, None, ViewOptions())
    assert data["snapshot"]["gpu"]["memory"]["device"] == 1
    assert data["snapshot"]["gpus"][1]["memory_used_bytes"] == gpus[1].memory_used_bytes
    assert " vram" not in format_line(_state(rows))


# --------------------------------------------------------- --json and the line ---


def test_a_json_update_has_the_breaches_their_culprits_and_the_top_rows(
    rows: tuple[Any, ...],
) -> None:
    culprit = max(rows, key=lambda row: row.rss)
    state = _state(rows, _breach("memory.percent", (_offender(culprit, 12.5),)))
    data = update(state, None, ViewOptions(rows=3))
    assert "processes" not in data["snapshot"]  # not the whole table
    assert {"memory", "swap", "cpu", "pressure"} <= set(data["snapshot"])
    assert len(data["top"]) == 3
    assert data["top"][0]["pid"] == culprit.pid
    assert data["top"][0]["culprit"] is True
    assert data["sorted_by"] == "memory"
    (breach,) = data["breaches"]
    assert breach["offenders"][0]["pid"] == culprit.pid
    assert data["level"] == "WARNING"


def test_a_piped_line_names_the_culprits_and_stays_one_line(rows: tuple[Any, ...]) -> None:
    hostile = _hostile(rows)
    state = _state((*rows, hostile), _breach("memory.percent", (_offender(hostile),)))
    line = format_line(state)
    assert "\n" not in line
    assert "\x1b" not in line
    assert f"{hostile.pid} evil\\x1b[2J" in line


def test_watch_once_json_names_a_process_burning_a_core() -> None:
    """A real child burning one core: the CPU-sorted top rows of ``--once --json`` hold
    it, at a share of one core as ``top`` counts it."""
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "resguard",
                "watch",
                "--once",
                "--json",
                "-n",
                "5",
                "--window",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        child.kill()
        child.wait(timeout=10)
    import json

    data = json.loads(done.stdout)
    (row,) = [row for row in data["top"] if row["pid"] == child.pid]
    assert 20.0 <= row["cpu_percent"] <= 105.0  # a share of one core; the 2 cores are shared


MiB = 1024 * 1024
_HOLD = (
    "import sys\n"
    "held = bytearray(int(sys.argv[1]))\n"
    "for at in range(0, len(held), 4096): held[at] = 1\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.mark.linux_backend  # a cgroup's limit and members are the kernel readers'
def test_in_a_cgroup_the_table_is_the_cgroups_and_the_memory_culprit_comes_first(
    memory_cgroup: Any,
) -> None:
    """A child holding most of a 400 MiB cgroup, and ``watch --once --json`` run inside
    the same cgroup: the rows are the cgroup's processes only, sorted by memory (the
    limit is in breach), the child first and marked as the culprit."""
    import json

    memory_cgroup.set_limit(400 * MiB)  # the holder and watch itself (~60 MiB): above 85%
    holder = memory_cgroup.python(
        _HOLD, str(300 * MiB), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"held\n"
    watch = memory_cgroup.spawn(
        [sys.executable, "-m", "resguard", "watch", "--once", "--json", "--window", "0.25"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = watch.communicate(timeout=60)
    data = json.loads(out)
    assert data["snapshot"]["memory"]["cgroup"] == memory_cgroup.relative, err
    assert data["level"] != "OK", data["snapshot"]["memory"]
    assert memory_cgroup.oom_kills() == 0
    assert data["sorted_by"] == "memory"
    pids = [row["pid"] for row in data["top"]]
    assert pids[0] == holder.pid, data["top"]
    assert data["top"][0]["culprit"] is True
    members = set(data["snapshot"]["cgroup_pids"])
    assert set(pids) <= members
    assert os.getpid() not in pids  # the host's processes are not the cgroup's


def test_the_live_view_lists_ollamas_models_from_the_stand_in(ollama_server: Any) -> None:
    """Ollama answering (the stand-in, through OLLAMA_HOST): the frame lists the loaded
    model with its size and idle time."""
    import ollama

    from watch_terminal import Terminal

    ollama.Client(host=ollama_server.host).generate(model="llama3.2:1b", prompt="hi")
    term = Terminal(env={"NO_COLOR": "1", "OLLAMA_HOST": ollama_server.host})
    try:
        term.read_until(lambda out: b"ollama  llama3.2:1b" in out, "the model in the frame")
        os.write(term.master, b"q")
        assert term.exit_code() == 0
    finally:
        term.close()
    line = next(
        line
        for line in term.output.decode().replace("\r\n", "\n").split("\n")
        if "ollama  llama3.2:1b" in line
    )
    assert "GiB" in line or "MiB" in line
    assert "idle " in line or "in use" in line


def test_watch_config_judges_by_the_guardian_policy_and_names_the_burner(tmp_path: Any) -> None:
    """``--config``: the ``[guardian]`` policy of that file, here a per-process CPU rule
    with no waiting (the runaway's 60 s shortened): a child burning a core is the
    breach's culprit and is marked in the top rows."""
    import json

    config = tmp_path / "resguard.toml"
    config.write_text(
        '[guardian]\npreset = "none"\n\n[[guardian.rule]]\nname = "burner"\n'
        "process_cpu_percent_above = 20\n"
    )
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "resguard",
                "watch",
                "--once",
                "--json",
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        child.kill()
        child.wait(timeout=10)
    assert done.returncode == 1, done.stderr  # the verdict is not OK
    data = json.loads(done.stdout)
    (breach,) = [breach for breach in data["breaches"] if breach["rule"] == "burner"]
    assert child.pid in [offender["pid"] for offender in breach["offenders"]]
    (row,) = [row for row in data["top"] if row["pid"] == child.pid]
    assert row["culprit"] is True
    assert data["sorted_by"] == "cpu"


def test_watch_config_and_preset_conflict(capsys: pytest.CaptureFixture[str]) -> None:
    from resguard.cli import main

    assert main(["watch", "--config", "x.toml", "--preset", "laptop"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_frame_escapes_bidi_c1_esc_and_lone_surrogates_and_spaces_a_nbsp(
    rows: tuple[Any, ...],
) -> None:
    """One escaper for the terminal and the notebook (render.printable): every control,
    bidi override and lone surrogate from a command line is written visibly; a no-break
    space is harmless on a terminal and shown as a space."""
    (mine,) = [row for row in rows if row.pid == os.getpid()]
    argv = ("nb\xa0sp", "bidi\u202eend", "c1\x9bx", "esc\x1b[2J", "lone\udc80", "ls\u2028x")
    hostile = attrs.evolve(mine, cmdline=argv)
    bare = attrs.evolve(mine, pid=mine.pid + 1_000_000, cmdline=(), name="kw\x1bx\xa0y")
    state = _state((hostile, bare))
    text = build_frame(state, [hostile, bare], ViewOptions(), 220, 40).plain()
    assert r"nb sp bidi\u202eend c1\x9bx esc\x1b[2J lone\udc80 ls\u2028x" in text
    assert r"[kw\x1bx y]" in text  # no command line: the name in brackets, escaped
    assert not any(char in text for char in "\xa0\u202e\x9b\x1b\udc80\u2028")
