"""Ollama's headroom where Ollama lives (issue 16 item 4): a local server's room is the
machine's or its process's cgroup's, never the asking service's; learned sizes let a
ModelPool choose the large variant. Through the official ollama client and the stand-in,
run as ``python -m resguard.testing.ollama`` in a process of its own."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard import InvalidType, ModelPool, ResourceExhausted
from resguard._probes.sockets import listener, listening_inodes, listening_pid
from resguard.ollama import OllamaHeadroom, OllamaModels
from resguard.ollama._where import is_local
from resguard.testing import ManualClock
from resguard.testing.ollama import OllamaStandIn

SMALL = "llama3.2:1b"  # 1.32 GB on disk, 1.51 GB loaded: "the 1.5 GB model"
LARGE = "gpt-oss:20b"  # 13.78 GB on disk (x 1.25 = 16.04 GiB), 12.5 GiB loaded
MEDIUM = "llama3.2:3b"
MIB = 2**20
GIB = 2**30


class Headroom:
    """A HeadroomSource with a set value (what a guard on Ollama's host would report)."""

    def __init__(self, value: int | None) -> None:
        self.value = value

    def headroom_bytes(self) -> int | None:
        return self.value


def start_standin(spawn: Callable[..., subprocess.Popen[str]] | None = None) -> tuple[Any, str]:
    """``python -m resguard.testing.ollama --port 0`` in its own process; (process, host)."""
    command = [sys.executable, "-m", "resguard.testing.ollama", "--port", "0"]
    if spawn is None:
        process: Any = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    else:
        process = spawn(command, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert "serving on" in line, line
    return process, line.split()[4]


@pytest.fixture(scope="module")
def standin() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """One stand-in process (outside any test cgroup) shared by the module's tests."""
    process, host = start_standin()
    yield process, host
    process.terminate()
    process.wait(timeout=10)


# ---------------------------------------------------------------- pure parts
def _tcp_table(rows: list[tuple[int, str, int]]) -> str:
    header = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
    )
    lines = [
        f"   {i}: 0100007F:{port:04X} 00000000:0000 {state} 00000000:00000000 "
        f"00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0"
        for i, (port, state, inode) in enumerate(rows)
    ]
    return header + "\n".join(lines) + "\n"


@given(
    st.lists(
        st.tuples(
            st.integers(1, 65535), st.sampled_from(["0A", "01", "06"]), st.integers(1, 10**9)
        ),
        max_size=20,
    ),
    st.integers(1, 65535),
)
def test_listening_inodes_are_the_sockets_listening_on_the_port(
    rows: list[tuple[int, str, int]], port: int
) -> None:
    expected = {inode for p, state, inode in rows if p == port and state == "0A"}
    assert listening_inodes(_tcp_table(rows), port) == expected


@given(st.text(), st.integers(1, 65535))
def test_listening_inodes_never_raise_on_damaged_text(text: str, port: int) -> None:
    assert isinstance(listening_inodes(text, port), frozenset)


@pytest.mark.parametrize(
    ("hostname", "local"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("0.0.0.0", True),
        (socket.gethostname(), True),
        ("203.0.113.5", False),  # TEST-NET-3: never this machine's
        ("ollama.example.com", False),  # no DNS lookup: a name is remote
    ],
)
def test_which_hosts_are_this_machine(hostname: str, local: bool) -> None:
    assert is_local(hostname) is local


def test_a_remote_ollama_has_unknown_headroom_and_the_models_say_where() -> None:
    remote = OllamaHeadroom("http://203.0.113.5:11434")
    assert remote.local is False
    assert remote.headroom_bytes() is None  # unknown, never 0
    assert "remote" in remote.where()
    models = OllamaModels("http://203.0.113.5:11434", register=False)
    try:
        assert isinstance(models.headroom, OllamaHeadroom)
        assert models.headroom.local is False
    finally:
        models.close()


def test_a_headroom_of_your_own_is_checked_and_used() -> None:
    with pytest.raises(InvalidType, match="headroom="):
        OllamaModels("http://127.0.0.1:1", headroom=42, register=False)  # type: ignore[arg-type]
    mine = Headroom(5 * GIB)
    with OllamaModels("http://203.0.113.5:11434", headroom=mine, register=False) as models:
        assert models.headroom is mine


# ---------------------------------------------------------------- finding Ollama's process
def test_the_standin_process_is_found_from_its_port(
    standin: tuple[subprocess.Popen[str], str],
) -> None:
    process, host = standin
    port = int(host.rsplit(":", 1)[1])
    assert listening_pid(port) == process.pid
    headroom = OllamaHeadroom(host)
    assert headroom.local
    assert headroom.pid == process.pid
    assert str(process.pid) in headroom.where()
    assert headroom.headroom_bytes() == pytest.approx(psutil.virtual_memory().available, rel=0.1)


def test_no_listener_is_the_machines_memory_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on (bound, never listening)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        clock = ManualClock()
        headroom = OllamaHeadroom(f"http://127.0.0.1:{port}", machine=lambda: 7 * GIB, clock=clock)
        with caplog.at_level(logging.WARNING, logger="resguard.ollama"):
            assert headroom.headroom_bytes() == 7 * GIB
            assert headroom.headroom_bytes() == 7 * GIB
            clock.advance(60)
            assert headroom.headroom_bytes() == 7 * GIB
        warnings = [r for r in caplog.records if f"port {port}" in r.getMessage()]
        assert len(warnings) == 1
        assert headroom.pid is None


# ---------------------------------------------------------------- the acceptance
SERVICE = """
import json, sys
from resguard import ResourceExhausted
from resguard.models import machine_headroom_bytes
from resguard.ollama import OllamaHeadroom, OllamaModels

host, machine = sys.argv[1], sys.argv[2]
own = machine_headroom_bytes()  # this process's cgroup: what admission compared with before
headroom = None if machine == "real" else OllamaHeadroom(host, machine=lambda: int(machine))
with OllamaModels(host, headroom=headroom, register=False) as models:
    try:
        info = models.ensure("llama3.2:1b")
        print(json.dumps({"own": own, "loaded": info.name, "size": info.size}))
    except ResourceExhausted as error:
        print(json.dumps({"own": own, "refused": error.reason, "numbers": error.numbers}))
"""


def test_a_service_in_a_300mib_cgroup_admits_a_model_the_local_ollama_has_room_for(
    memory_cgroup: Any, standin: tuple[subprocess.Popen[str], str]
) -> None:
    _, host = standin
    memory_cgroup.set_limit(300 * MIB)

    def service(machine: str) -> dict[str, Any]:
        process = memory_cgroup.python(SERVICE, host, machine, stdout=subprocess.PIPE)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0, out
        result: dict[str, Any] = json.loads(out)
        return result

    admitted = service("real")  # the machine has room (this machine has far more than 1.6 GB)
    assert admitted["own"] < 300 * MIB  # the service's own cgroup could never fit the model
    assert admitted["loaded"] == SMALL
    assert admitted["size"] == 1_514_584_145
    with OllamaModels(host, register=False) as models:
        models.unload(SMALL)

    refused = service(str(GIB))  # the machine has 1 GiB left: the model does not fit
    assert refused["refused"] == "memory"
    assert refused["numbers"]["headroom_bytes"] == GIB
    assert refused["numbers"]["size_bytes"] == 1_651_372_912  # 1.32 GB on disk x 1.25


def test_ollama_in_a_limited_cgroup_is_bounded_by_it(memory_cgroup: Any) -> None:
    memory_cgroup.set_limit(200 * MIB)  # Ollama's own cgroup; this test process is outside
    process, host = start_standin(memory_cgroup.spawn)
    try:
        headroom = OllamaHeadroom(host)
        assert headroom.pid == process.pid
        room = headroom.headroom_bytes()
        assert room is not None
        assert room <= 200 * MIB
        with (
            OllamaModels(host, register=False) as models,
            pytest.raises(ResourceExhausted) as refused,
        ):
            models.ensure(SMALL)
        assert refused.value.reason == "memory"
        assert refused.value.numbers["headroom_bytes"] <= 200 * MIB
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---------------------------------------------------------------- learned sizes and the pool
def test_a_pool_of_16gib_chooses_gpt_oss_20b_once_its_learned_size_fits(
    ollama_server: OllamaStandIn,
) -> None:
    with OllamaModels(ollama_server.host, headroom=Headroom(100 * GIB), register=False) as models:
        pool = ModelPool(budget="16GiB")
        large = models.lazy(LARGE, pool=pool)
        small = models.lazy(MEDIUM, pool=pool)
        assert large.size_bytes == 17_225_217_155  # 13.78 GB on disk x 1.25: 16.04 GiB
        assert pool.choose([large, small]) is small  # the estimate does not fit 16 GiB

        models.ensure(LARGE)  # its first load: /api/ps says what it really takes
        models.unload(LARGE)
        assert large.size_bytes == 13_421_772_800  # learned: 12.5 GiB, remembered after unload
        chosen = pool.choose([large, small])
        assert chosen is large
        with chosen as name:
            assert name == LARGE
        assert ollama_server.loaded_names() == [LARGE]


def test_a_pool_of_ollama_models_reads_ollamas_headroom_not_the_services(
    ollama_server: OllamaStandIn,
) -> None:
    room = Headroom(100 * 10**9)
    with OllamaModels(ollama_server.host, headroom=room, register=False) as models:
        models.ensure(LARGE)
        models.unload(LARGE)  # learned: 13.4 GB
        room.value = 5 * 10**9  # Ollama's host has 5 GB free (this machine may have more)
        pool = ModelPool(budget="16GiB")  # no guard: the members say where their room is
        large = models.lazy(LARGE, pool=pool)
        small = models.lazy(MEDIUM, pool=pool)
        assert pool.choose([large, small]) is small  # 13.4 GB does not fit Ollama's 5 GB
        room.value = 1 * 10**9
        with pytest.raises(ResourceExhausted) as refused:
            pool.choose([large, small])
        assert refused.value.numbers["headroom_bytes"] == 1 * 10**9


# ---------------------------------------------------------------- a fixture tree
def _tree(tmp_path: Any, *, limit: str, stat_text: str = "0 (ollama) S 1 " + "0 " * 30) -> Any:
    """A /proc and a cgroup v1 tree where process 4242 listens on port 11434 in cgroup
    /ollama (memory.limit_in_bytes *limit*, 100 MiB used, 10 MiB of it inactive file)."""
    from resguard._probes.paths import Roots

    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "net").mkdir(parents=True)
    (proc / "net" / "tcp").write_text(_tcp_table([(11434, "0A", 777), (22, "0A", 778)]))
    (proc / "net" / "tcp6").write_text("garbage\x00\n:::\n")
    (proc / "4242" / "fd").mkdir(parents=True)
    (proc / "4242" / "fd" / "3").symlink_to("socket:[777]")
    (proc / "4242" / "stat").write_text(stat_text)
    (proc / "4242" / "cgroup").write_text("5:memory:/ollama\n")
    (proc / "99" / "fd").mkdir(parents=True)  # another process, not the listener
    (proc / "99" / "fd" / "0").symlink_to("/dev/null")
    memory = cgroup / "memory" / "ollama"
    memory.mkdir(parents=True)
    (cgroup / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (memory / "memory.limit_in_bytes").write_text(limit)
    (memory / "memory.usage_in_bytes").write_text(f"{100 * MIB}\n")
    (memory / "memory.stat").write_text(f"total_inactive_file {10 * MIB}\n")
    (memory / "cgroup.procs").write_text("4242\n")
    return Roots(proc=str(proc), cgroup=str(cgroup))


def test_ollamas_cgroup_bounds_its_headroom_in_a_fixture_tree(tmp_path: Any) -> None:
    roots = _tree(tmp_path, limit=f"{2 * GIB}\n")
    headroom = OllamaHeadroom("http://127.0.0.1:11434", roots=roots, machine=lambda: 20 * GIB)
    assert headroom.pid == 4242
    assert headroom.headroom_bytes() == 2 * GIB - 90 * MIB  # limit minus the working set
    unlimited = _tree(tmp_path / "other", limit="9223372036854771712\n")
    machine_only = OllamaHeadroom("http://[::1]:11434", roots=unlimited, machine=lambda: 3 * GIB)
    assert machine_only.headroom_bytes() == 3 * GIB  # no limit on Ollama's cgroup
    tight = OllamaHeadroom("http://localhost:11434", roots=roots, machine=lambda: 1 * GIB)
    assert tight.headroom_bytes() == 1 * GIB  # the machine is tighter than the cgroup


def test_a_damaged_tree_is_the_machines_memory_and_never_raises(tmp_path: Any) -> None:
    roots = _tree(tmp_path, limit="not a number\n", stat_text="junk")
    headroom = OllamaHeadroom("http://127.0.0.1:11434", roots=roots, machine=lambda: 5 * GIB)
    assert headroom.headroom_bytes() == 5 * GIB  # its identity unreadable: not trusted
    unknown = OllamaHeadroom("http://127.0.0.1:11434", roots=roots, machine=lambda: None)
    assert unknown.headroom_bytes() is None  # unknown, never 0


def test_a_replaced_listener_is_looked_for_again(tmp_path: Any) -> None:
    roots = _tree(tmp_path, limit=f"{2 * GIB}\n")
    clock = ManualClock()
    headroom = OllamaHeadroom(
        "http://127.0.0.1:11434", roots=roots, machine=lambda: 20 * GIB, clock=clock
    )
    assert headroom.pid == 4242
    stat = tmp_path / "proc" / "4242" / "stat"
    stat.write_text("0 (ollama) S 1 " + "0 " * 17 + "999 " + "0 " * 12)  # another start time
    (tmp_path / "proc" / "4242" / "fd" / "3").unlink()  # and no longer the listener
    assert headroom.headroom_bytes() == 20 * GIB  # the old cgroup is not trusted
    assert headroom.pid is None


def test_a_size_is_learned_from_a_load_someone_else_made(ollama_server: OllamaStandIn) -> None:
    import ollama

    ollama.Client(host=ollama_server.host).generate(model=LARGE)  # another client loads it
    with OllamaModels(ollama_server.host, headroom=Headroom(100 * GIB), register=False) as models:
        pool = ModelPool(budget="16GiB")
        large = models.lazy(LARGE, pool=pool)
        small = models.lazy(MEDIUM, pool=pool)
        assert large.size_bytes == 13_421_772_800  # /api/ps's size, not 16.04 GiB from disk
        assert pool.choose([large, small]) is large


def test_a_client_without_host_is_the_machines_memory_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import ollama

    from resguard._modules.faults import FaultLog
    from resguard.ollama import _face

    monkeypatch.setattr(_face, "_faults", FaultLog(logging.getLogger("resguard.ollama")))
    client = ollama.Client(host="http://203.0.113.5:11434")  # its URL is the client's secret
    with caplog.at_level(logging.WARNING, logger="resguard.ollama"):
        for _ in range(2):
            with OllamaModels(client=client, register=False) as models:
                assert isinstance(models.headroom, OllamaHeadroom)
                assert models.headroom.host is None  # never read from the client's privates
                assert models.headroom.where() == "this machine's memory"
    warnings = [r for r in caplog.records if "pass host= with client=" in r.getMessage()]
    assert len(warnings) == 1  # once, not per object
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="resguard.ollama"):
        with OllamaModels("http://203.0.113.5:11434", client=client, register=False) as named:
            assert isinstance(named.headroom, OllamaHeadroom)
            assert named.headroom.host == "http://203.0.113.5:11434"  # the host given
            assert named.headroom.local is False
    assert "pass host=" not in caplog.text


def test_the_listener_scan_is_bounded_by_the_injected_clock(tmp_path: Any) -> None:
    roots = _tree(tmp_path, limit=f"{2 * GIB}\n")
    assert listening_pid(11434, roots.proc, clock=lambda: 0.0) == 4242
    found = listener(11434, roots.proc, clock=lambda: 0.0)
    assert found is not None
    assert (found.pid, found.start_ticks) == (4242, 0)
    readings = iter([0.0, 5.0, 10.0, 15.0])  # past the 1 s deadline at the first process
    assert listening_pid(11434, roots.proc, clock=lambda: next(readings)) is None
    assert listener(11434, str(tmp_path / "no-proc"), clock=lambda: 0.0) is None


def test_ollamas_headroom_scans_by_the_clients_clock(tmp_path: Any) -> None:
    roots = _tree(tmp_path, limit=f"{2 * GIB}\n")
    ticks: list[float] = []

    def clock() -> float:  # the client's clock: every reading the headroom takes is seen
        ticks.append(0.0)
        return 0.0

    headroom = OllamaHeadroom("http://127.0.0.1:11434", roots=roots, clock=clock)
    assert headroom.pid == 4242
    assert len(ticks) >= 3  # the retry pacing and both ends of the scan's deadline
    with OllamaModels("http://203.0.113.5:11434", clock=clock, register=False) as models:
        assert isinstance(models.headroom, OllamaHeadroom)
        before = len(ticks)
        models.headroom._clock()
        assert len(ticks) == before + 1  # the face handed its clock on


# ---------------------------------------------------------------- hostile sources and sizes
def test_a_hanging_headroom_costs_ensure_the_clients_timeout_not_its_hang(
    ollama_server: OllamaStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    import threading
    import time

    release = threading.Event()

    class Hangs:
        def headroom_bytes(self) -> int:
            release.wait(30)
            return 1 << 40

    try:
        with OllamaModels(
            ollama_server.host, headroom=Hangs(), timeout=0.5, register=False
        ) as models:
            started = time.monotonic()
            assert models.ensure(SMALL).name == SMALL  # unknown room: admitted
            assert time.monotonic() - started < 5
        assert "gave no answer within 0.5 s" in caplog.text
    finally:
        release.set()


@pytest.mark.parametrize("reported", [0, 10**20, 2**63])
def test_an_absurd_size_from_api_ps_is_unknown_and_the_estimate_counts(
    ollama_server_factory: Callable[..., OllamaStandIn], reported: int
) -> None:
    from resguard.testing.ollama import CatalogueModel

    catalogue = [
        CatalogueModel("x:1b", 1_000_000_000, reported),
        CatalogueModel("small:1b", 500_000_000, 600_000_000),
    ]
    server = ollama_server_factory(catalogue=catalogue, scale=1e-15)
    with OllamaModels(server.host, headroom=Headroom(8 * GIB), register=False) as models:
        models.ensure("x:1b")
        models.unload("x:1b")
        assert models.estimate_bytes("x:1b") == 1_250_000_000  # disk x 1.25, not 0 or 87 EiB
        pool = ModelPool(budget="16GiB")
        large, small = models.lazy("x:1b", pool=pool), models.lazy("small:1b", pool=pool)
        assert pool.choose([large, small]) is large


def test_a_pool_choice_skips_a_variant_that_is_not_pulled(ollama_server: OllamaStandIn) -> None:
    from resguard import OllamaError

    with OllamaModels(ollama_server.host, headroom=Headroom(100 * GIB), register=False) as models:
        pool = ModelPool(budget="16GiB")
        missing = models.lazy("no-such-model:70b", pool=pool)
        small = models.lazy(SMALL, pool=pool)
        assert pool.choose([missing, small]) is small
        with pytest.raises(OllamaError, match="no-such-model:70b") as caught:
            pool.choose([missing])
        assert caught.value.status_code == 404


def pid_of(headroom: OllamaHeadroom) -> int | None:
    """Its listener's pid now (a call, so a type checker does not keep an earlier answer)."""
    return headroom.pid


def test_an_ollama_restarted_elsewhere_is_found_within_a_second_not_thirty(
    tmp_path: Any,
) -> None:
    roots = _tree(tmp_path, limit=f"{2 * GIB}\n")
    proc = tmp_path / "proc"
    clock = ManualClock()
    headroom = OllamaHeadroom(
        "http://127.0.0.1:11434", roots=roots, machine=lambda: 20 * GIB, clock=clock
    )
    assert pid_of(headroom) == 4242
    (proc / "4242" / "stat").write_text("0 (ollama) S 1 " + "0 " * 17 + "999 " + "0 " * 12)
    (proc / "4242" / "fd" / "3").unlink()  # Ollama stopped; its socket not yet gone
    assert pid_of(headroom) is None
    (proc / "5000" / "fd").mkdir(parents=True)  # restarted: process 5000, a new socket
    (proc / "5000" / "fd" / "4").symlink_to("socket:[888]")
    (proc / "5000" / "stat").write_text("0 (ollama) S 1 " + "0 " * 30)
    (proc / "5000" / "cgroup").write_text("5:memory:/ollama\n")
    (proc / "net" / "tcp").write_text(_tcp_table([(11434, "0A", 888)]))
    assert pid_of(headroom) is None  # looked at most every RELOOK_S
    clock.advance(1.5)
    assert pid_of(headroom) == 5000  # not after LOOKUP_RETRY_S (30 s) of the machine's memory
    assert headroom.headroom_bytes() == 2 * GIB - 90 * MIB


def test_the_fd_scan_is_not_repeated_for_the_same_sockets_before_the_retry(
    tmp_path: Any,
) -> None:
    roots = _tree(tmp_path, limit=f"{2 * GIB}\n")
    proc = tmp_path / "proc"
    (proc / "4242" / "fd" / "3").unlink()  # a listener nobody here can see (another user's)
    clock = ManualClock()
    headroom = OllamaHeadroom("http://127.0.0.1:11434", roots=roots, clock=clock)
    assert pid_of(headroom) is None
    (proc / "4242" / "fd" / "3").symlink_to("socket:[777]")
    clock.advance(5)
    assert pid_of(headroom) is None  # the same socket: the last scan's answer stands
    clock.advance(30)
    assert pid_of(headroom) == 4242


def test_a_refusal_says_where_the_room_is_and_sizes_that_round_alike_exactly() -> None:
    from resguard.ollama import _core

    refusal = _core.refused("m:1b", 1_503_238_554, 1_503_000_000, 0, "where Ollama runs (x)")
    assert str(refusal).endswith(
        "it needs about 1,503,238,554 bytes; 1,503,000,000 bytes is free where Ollama runs (x)"
    )
    assert "needs about 1.4 GiB; 100.0 MiB is free" in str(
        _core.refused("m:1b", 1_503_238_554, 100 * MIB, 0)
    )


def test_a_raising_log_handler_never_fails_an_ollama_unload(ollama_server: OllamaStandIn) -> None:
    class Raising(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise RuntimeError("handler bug")

    logger = logging.getLogger("resguard.ollama")
    handler = Raising()
    logger.addHandler(handler)
    try:
        with OllamaModels(ollama_server.host, headroom=Headroom(100 * GIB), register=False) as m:
            m.ensure(SMALL)
            assert m.unload(SMALL) > 0  # the "unloaded Ollama model" line did not raise
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("on_disk", [0, 10**20])
def test_an_absurd_size_on_disk_is_a_clear_error_and_a_pool_leaves_it_out(
    ollama_server_factory: Callable[..., OllamaStandIn], on_disk: int
) -> None:
    from resguard import OllamaError
    from resguard.testing.ollama import CatalogueModel

    catalogue = [
        CatalogueModel("x:1b", on_disk, 1_000_000_000),
        CatalogueModel("small:1b", 500_000_000, 600_000_000),
    ]
    server = ollama_server_factory(catalogue=catalogue, scale=1e-15)
    with OllamaModels(server.host, headroom=Headroom(8 * GIB), register=False) as models:
        with pytest.raises(OllamaError, match=f"reports {on_disk!r} bytes on disk for 'x:1b'"):
            models.estimate_bytes("x:1b")
        pool = ModelPool(budget="16GiB")
        large, small = models.lazy("x:1b", pool=pool), models.lazy("small:1b", pool=pool)
        assert pool.choose([large, small]) is small
