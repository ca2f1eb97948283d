"""resguard.ollama through the official ollama client against the stand-in server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import ollama
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard import InvalidType, InvalidValue, OllamaError, ResourceExhausted, reclaim
from resguard._probes.cgroup import read_memory
from resguard.ollama import AsyncOllamaModels, OllamaModels, canonical, parse_host
from resguard.snapshot import OllamaModelInfo
from resguard.testing import ManualClock
from resguard.testing.misbehaving import MisbehavingServer
from resguard.testing.ollama import (
    BadRequest,
    CatalogueModel,
    OffsetClock,
    OllamaStandIn,
    parse_keep_alive,
)

from support import free_port, run_python, wait_until

SMALL = "llama3.2:1b"
MEDIUM = "llama3.2:3b"
BIG = "qwen3:8b"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def models(ollama_server: OllamaStandIn, ollama_clock: OffsetClock) -> Any:
    with OllamaModels(
        ollama_server.host, clock=ollama_clock, wall_clock=ollama_clock, timeout=10
    ) as m:
        yield m


class Headroom:
    """A HeadroomSource with a set value (what a Guard would report), for admission tests."""

    def __init__(self, value: int) -> None:
        self.value = value

    def headroom_bytes(self) -> int:
        return self.value


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ---------------------------------------------------------------- load, list, unload
def test_load_list_unload_and_confirm(models: OllamaModels, ollama_server: OllamaStandIn) -> None:
    info = models.ensure(SMALL)
    assert isinstance(info, OllamaModelInfo)
    assert info.name == SMALL
    assert info.size == 1_514_584_145
    assert info.size_vram == 0
    assert info.expires_at is not None
    assert info.expires_at > time.time()
    assert [i.name for i in models.loaded()] == [SMALL]
    pid = ollama_server.runner_pids()[SMALL]
    assert psutil.Process(pid).memory_info().rss > 1_400_000  # 1.5 GB scaled to ~1.4 MB

    # a real client sees the same state
    client = ollama.Client(host=ollama_server.host)
    assert [m.model for m in client.ps().models] == [SMALL]

    assert models.unload(SMALL) == info.size
    assert models.loaded() == ()
    assert gone(pid)
    assert models.unload(SMALL) == 0  # not loaded: nothing to do
    with pytest.raises(OllamaError) as caught:
        models.unload("no-such-model:7b")
    assert caught.value.status_code == 404


def test_ensure_is_a_no_op_when_loaded_and_names_are_canonical(
    models: OllamaModels, ollama_server: OllamaStandIn
) -> None:
    models.ensure("LLAMA3.2:1B")
    models.ensure(SMALL)
    assert ollama_server.load_requests("LLAMA3.2:1B") == 1
    assert ollama_server.load_requests(SMALL) == 0
    assert canonical("library/Llama3.2") == "llama3.2:latest"
    with pytest.raises(OllamaError, match="not installed") as caught:
        models.ensure("missing:1b")
    assert caught.value.status_code == 404


def test_idle_since_comes_from_the_keep_alive_resguard_set(
    models: OllamaModels, ollama_clock: OffsetClock
) -> None:
    before = ollama_clock()
    models.ensure(SMALL, keep_alive="10m")
    ollama_clock.advance(120)
    (info,) = models.loaded()
    assert info.idle_since is not None
    assert before - 1 <= info.idle_since <= before + 5  # expires_at - 10 min = the last use
    assert models.unload_idle(min_idle="5m") == []
    assert models.unload_idle(min_idle="1m") == [SMALL]
    assert models.loaded() == ()


def test_idle_since_of_a_model_loaded_by_someone_else(
    ollama_server: OllamaStandIn, ollama_clock: OffsetClock
) -> None:
    ollama.Client(host=ollama_server.host).generate(model=SMALL)  # another program loads it
    with OllamaModels(ollama_server.host, clock=ollama_clock, wall_clock=ollama_clock) as unknowing:
        assert unknowing.loaded()[0].idle_since is None  # keep-alive unknown: no guess
    with OllamaModels(
        ollama_server.host, clock=ollama_clock, wall_clock=ollama_clock, default_keep_alive="5m"
    ) as knowing:
        ollama_clock.advance(60)
        idle_since = knowing.loaded()[0].idle_since
        assert idle_since is not None
        assert 55 <= ollama_clock() - idle_since <= 70


def test_server_unloads_after_the_keep_alive(
    models: OllamaModels, ollama_clock: OffsetClock, ollama_server: OllamaStandIn
) -> None:
    models.ensure(SMALL, keep_alive="1m")
    pid = ollama_server.runner_pids()[SMALL]
    ollama_clock.advance(30)
    assert [i.name for i in models.loaded()] == [SMALL]
    ollama_clock.advance(31)
    # the expired runner is killed outside the server's lock: /api/ps lists it until then
    wait_until(lambda: models.loaded() == (), timeout_s=5, what="the expired model to go")
    assert gone(pid)


def test_lazy_model_loads_on_use_and_unloads_after_its_idle_ttl(
    models: OllamaModels, ollama_server: OllamaStandIn
) -> None:
    lazy = models.lazy(SMALL, idle_ttl="30s", keep_alive="1h")
    assert models.loaded() == ()
    with lazy as name:
        reply = ollama.Client(host=ollama_server.host).generate(model=name, prompt="hi there")
        assert reply.response == "there hi"
        assert not lazy.unload_if_idle(now=lazy.clock() + 3600)  # pinned
    assert [i.name for i in models.loaded()] == [SMALL]
    assert not lazy.unload_if_idle(now=lazy.clock() + 29)
    assert lazy.unload_if_idle(now=lazy.clock() + 31)
    assert models.loaded() == ()
    assert lazy.size_bytes == 1_514_584_145  # learnt from /api/ps when it was loaded


def test_fifty_threads_ask_for_one_lazy_ollama_model(
    models: OllamaModels, ollama_server: OllamaStandIn
) -> None:
    ollama_server.catalogue[SMALL] = CatalogueModel(SMALL, 1_321_098_329, 1_514_584_145, load_s=0.3)
    lazy = models.lazy(SMALL)
    barrier = threading.Barrier(50)
    names: list[str] = []

    def worker() -> None:
        barrier.wait()
        with lazy as name:
            names.append(name)

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert names == [SMALL] * 50
    assert ollama_server.load_requests(SMALL) == 1
    assert lazy.loads == 1


@pytest.mark.anyio
async def test_fifty_tasks_ask_for_one_lazy_ollama_model(
    ollama_server: OllamaStandIn, ollama_clock: OffsetClock
) -> None:
    ollama_server.catalogue[SMALL] = CatalogueModel(SMALL, 1_321_098_329, 1_514_584_145, load_s=0.3)
    async with AsyncOllamaModels(
        ollama_server.host, clock=ollama_clock, wall_clock=ollama_clock
    ) as models:
        lazy = models.lazy(SMALL)
        names: list[str] = []

        async def worker() -> None:
            async with lazy as name:
                names.append(name)

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(worker)
        assert names == [SMALL] * 50
        assert ollama_server.load_requests(SMALL) == 1
        assert [i.name for i in await models.loaded()] == [SMALL]


# ---------------------------------------------------------------- admission
def test_ensure_unloads_idle_models_lru_to_make_room(
    ollama_server: OllamaStandIn, ollama_clock: OffsetClock
) -> None:
    headroom = Headroom(1_000_000_000)
    with OllamaModels(
        ollama_server.host,
        clock=ollama_clock,
        wall_clock=ollama_clock,
        guard=headroom,
        register=False,
    ) as models:
        headroom.value = 10**12
        models.ensure(BIG)
        ollama_clock.advance(10)
        models.ensure(SMALL)
        headroom.value = 1_000_000_000  # 1 GB free: MEDIUM (2.5 GB estimated) does not fit
        models.ensure(MEDIUM)  # BIG was used longest ago and is enough on its own
        assert sorted(i.name for i in models.loaded()) == sorted([SMALL, MEDIUM])


def test_ensure_refuses_when_only_busy_models_could_make_room(
    ollama_server: OllamaStandIn, ollama_clock: OffsetClock
) -> None:
    headroom = Headroom(10**12)
    with (
        OllamaModels(
            ollama_server.host,
            clock=ollama_clock,
            wall_clock=ollama_clock,
            guard=headroom,
            register=False,
        ) as models,
        models.using(BIG),
    ):
        headroom.value = 1_000_000_000
        with pytest.raises(ResourceExhausted) as caught:
            models.ensure(MEDIUM)
        assert caught.value.reason == "memory"
        assert caught.value.numbers["size_bytes"] >= 2_019_393_189  # disk size x factor
        assert [i.name for i in models.loaded()] == [BIG]
        assert ollama_server.load_requests(MEDIUM) == 0


def test_uses_decorator_marks_the_model_busy_during_the_call(
    models: OllamaModels, ollama_server: OllamaStandIn, ollama_clock: OffsetClock
) -> None:
    client = ollama.Client(host=ollama_server.host)
    seen: dict[str, Any] = {}

    @models.uses(SMALL)
    def ask(prompt: str) -> str:
        seen["reclaimable"] = models.reclaimable_bytes()
        seen["idle_since"] = models.loaded()[0].idle_since
        return str(client.generate(model=SMALL, prompt=prompt).response)

    assert ask("a b") == "b a"
    assert seen["reclaimable"] == 0  # in use: not on offer to the ladder
    assert seen["idle_since"] == pytest.approx(ollama_clock(), abs=5)
    assert models.reclaimable_bytes() == 0  # used a moment ago: not idle for 30 s yet
    ollama_clock.advance(reclaim.DEFAULT_MIN_IDLE_S + 1)
    assert models.reclaimable_bytes() == 1_514_584_145


@pytest.mark.anyio
async def test_uses_decorator_on_async_functions(
    ollama_server: OllamaStandIn, ollama_clock: OffsetClock
) -> None:
    sync_models = OllamaModels(
        ollama_server.host, clock=ollama_clock, wall_clock=ollama_clock, register=False
    )
    async with AsyncOllamaModels(
        ollama_server.host, clock=ollama_clock, wall_clock=ollama_clock, register=False
    ) as models:
        client = ollama.AsyncClient(host=ollama_server.host)

        @models.uses(SMALL, keep_alive="1h")
        async def ask(prompt: str) -> str:
            return str((await client.generate(model=SMALL, prompt=prompt)).response)

        @sync_models.uses(MEDIUM, keep_alive="1h")
        async def ask_medium(prompt: str) -> str:
            assert sync_models.reclaimable_bytes() == 1_514_584_145  # SMALL idle, MEDIUM busy
            return str((await client.generate(model=MEDIUM, prompt=prompt)).response)

        assert await ask("x y") == "y x"
        ollama_clock.advance(reclaim.DEFAULT_MIN_IDLE_S + 1)
        assert await ask_medium("1 2") == "2 1"
        assert {i.name for i in await models.loaded()} == {SMALL, MEDIUM}
        assert await models.unload_idle(min_idle="1m") == []
        ollama_clock.advance(11 * 60)
        assert await models.unload_idle(min_idle="10m") == [SMALL]  # MEDIUM's idle time unknown
        assert await models.unload(MEDIUM) == 3_518_155_776
        assert await models.loaded() == ()
        with pytest.raises(InvalidType):
            models.uses(SMALL)(lambda: None)
        await client.close()  # type: ignore[no-untyped-call]
    sync_models.close()


# ---------------------------------------------------------------- the ladder
def test_reclaim_unloads_idle_models_least_recently_used_first(
    models: OllamaModels, ollama_clock: OffsetClock
) -> None:
    assert models in reclaim.registered()
    assert models.cost >= reclaim.Cost.MODEL
    for name in (SMALL, MEDIUM, BIG):
        models.ensure(name, keep_alive="1h")
        ollama_clock.advance(5)
    ollama_clock.advance(reclaim.DEFAULT_MIN_IDLE_S)
    with models.using(SMALL):
        assert models.reclaim(1) == 3_518_155_776  # MEDIUM: the oldest that is not in use
        assert {i.name for i in models.loaded()} == {SMALL, BIG}
        assert models.reclaim(10**12) == 6_654_289_920  # BIG; SMALL is in use
        assert [i.name for i in models.loaded()] == [SMALL]
    assert models.reclaim(10**12) == 0  # SMALL was used a moment ago
    ollama_clock.advance(reclaim.DEFAULT_MIN_IDLE_S)
    assert models.reclaim(10**12) == 1_514_584_145


def test_ladder_unloads_the_idle_model_under_a_real_squeeze(
    memory_cgroup: Any,
    ollama_server_factory: Callable[..., OllamaStandIn],
    ollama_clock: OffsetClock,
) -> None:
    gb = 10**9
    catalogue = [
        CatalogueModel("idle:1b", gb, int(1.6 * gb)),
        CatalogueModel("busy:1b", gb, int(1.6 * gb)),
    ]
    server = ollama_server_factory(
        catalogue=catalogue,
        scale=1 / 16,  # ~100 MB per runner
        cgroup=memory_cgroup.path,
    )
    ladder = reclaim.Ladder(lambda: working_set(), min_reclaim="1MiB")
    models = OllamaModels(server.host, clock=ollama_clock, wall_clock=ollama_clock, register=ladder)

    def working_set() -> int:
        memory = read_memory(memory_cgroup.path, memory_cgroup.version)
        assert memory is not None
        return int(memory.working_set)

    try:
        models.ensure("idle:1b")
        ollama_clock.advance(reclaim.DEFAULT_MIN_IDLE_S + 5)
        with models.using("busy:1b"):
            loaded_ws = working_set()
            assert loaded_ws > 190 * 2**20
            limit = loaded_ws + 24 * 2**20
            memory_cgroup.set_limit(limit)
            percent = 100 * working_set() / limit
            assert percent > 85  # a real squeeze: WARNING by the laptop preset's numbers
            needed = working_set() - int(0.8 * limit)
            idle_pid = server.runner_pids()["idle:1b"]
            busy_pid = server.runner_pids()["busy:1b"]

            report = ladder.run(needed)

            assert [i.name for i in models.loaded()] == ["busy:1b"]
            assert gone(idle_pid)
            assert not gone(busy_pid)
            assert working_set() < loaded_ws - 80 * 2**20  # measurably dropped
            assert report.freed_bytes > 80 * 2**20
            assert any(step.name == models.name for step in report.steps)
            assert memory_cgroup.oom_kills() == 0
    finally:
        models.close()


# ---------------------------------------------------------------- faults
FAULTS = ["down", "slow", "http500", "dropped"]


def break_server(kind: str, server: OllamaStandIn) -> str:
    """Make the server misbehave; return the host to talk to."""
    if kind == "down":
        return f"http://127.0.0.1:{free_port()}"
    if kind == "slow":
        server.delay_s = 2.0
    elif kind == "http500":
        server.fail(500, "runner crashed")
    elif kind == "dropped":
        server.drop_connections = True
    return server.host


@pytest.mark.parametrize("kind", FAULTS)
def test_faults_raise_one_documented_error(kind: str, ollama_server: OllamaStandIn) -> None:
    host = break_server(kind, ollama_server)
    with OllamaModels(host, timeout=0.5, register=False) as models:
        with pytest.raises(OllamaError) as caught:
            models.loaded()
        assert caught.value.__cause__ is not None
        assert caught.value.status_code == (500 if kind == "http500" else None)
        with pytest.raises(OllamaError) as caught_unload:
            models.unload(SMALL)
        assert caught_unload.value.__cause__ is not None
        with pytest.raises(OllamaError):
            models.ensure(SMALL)


@pytest.mark.parametrize("kind", FAULTS)
@pytest.mark.anyio
async def test_async_faults_raise_one_documented_error(
    kind: str, ollama_server: OllamaStandIn
) -> None:
    host = break_server(kind, ollama_server)
    async with AsyncOllamaModels(host, timeout=0.5, register=False) as models:
        with pytest.raises(OllamaError) as caught:
            await models.loaded()
        assert caught.value.status_code == (500 if kind == "http500" else None)
        with pytest.raises(OllamaError):
            await models.unload(SMALL)


@pytest.mark.parametrize("kind", FAULTS)
def test_source_and_ladder_degrade_and_log_once(
    kind: str, ollama_server: OllamaStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    host = break_server(kind, ollama_server)
    models = OllamaModels(host, timeout=0.5, register=False)
    source = models.as_source()
    assert source.name == "ollama"
    caplog.set_level(logging.WARNING, logger="resguard.ollama")
    for _ in range(3):
        assert source.sample() == {"ollama": None}
        assert models.reclaimable_bytes() == 0
        assert models.reclaim(10**9) == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once for the source, once for the ladder
    if kind != "down":
        ollama_server.clear_faults()
        caplog.clear()
        with OllamaModels(ollama_server.host, register=False) as healthy:
            healthy.ensure(SMALL)
        sampled = source.sample()["ollama"]
        assert isinstance(sampled, tuple)
        assert [i.name for i in sampled] == [SMALL]
        assert any("works again" in r.getMessage() for r in caplog.records)
    models.close()


def test_stream_error_and_bad_answers_are_translated(ollama_server: OllamaStandIn) -> None:
    ollama_server.fail(
        503,
        "server busy, please try again.  maximum pending requests exceeded",
        paths=["/api/generate"],
    )
    with OllamaModels(ollama_server.host, register=False) as models:
        with pytest.raises(OllamaError, match="server busy") as caught:
            models.ensure(SMALL)
        assert caught.value.status_code == 503
        assert isinstance(caught.value.__cause__, ollama.ResponseError)


# ---------------------------------------------------------------- packaging and CLI
def test_import_without_ollama_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['ollama'] = None\n"
        "try:\n    import resguard.ollama\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "pip install 'resguard[ollama]'" in out


def test_models_module_does_not_import_ollama() -> None:
    code = "import sys, resguard, resguard.models; print('ollama' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "False"


def test_the_old_cli_name_is_the_moved_command_with_a_deprecation_warning() -> None:
    # The command moved to resguard.cli.ollama (its tests to test_cli_ollama.py, assertions
    # unchanged); resguard.ollama.cli stays importable.
    import resguard.cli.ollama
    import resguard.ollama

    with pytest.warns(DeprecationWarning, match=r"resguard\.cli\.ollama"):
        assert resguard.ollama.cli is resguard.cli.ollama.cli


# ---------------------------------------------------------------- the stand-in itself
def test_standin_speaks_the_protocol(ollama_server: OllamaStandIn) -> None:
    with httpx.Client(base_url=ollama_server.host) as http:
        assert http.get("/").text == "Ollama is running"
        assert http.head("/api/tags").status_code == 200
        assert http.get("/api/version").json() == {"version": "0.12.3"}
        missing = http.get("/api/nothing")
        assert (missing.status_code, missing.text) == (404, "404 page not found")
        assert http.get("/api/generate").status_code == 405
        assert http.post("/api/generate", content=b"").json() == {"error": "missing request body"}
        assert http.post("/api/generate", json={"model": ""}).status_code == 404
        assert http.post("/api/chat", json={"model": ""}).status_code == 400
        assert http.get("/api/ps").json() == {"models": []}
        bad = http.post("/api/generate", json={"model": SMALL, "keep_alive": "300"})
        assert bad.status_code == 400
        assert "missing unit" in bad.json()["error"]
        chat = http.post("/api/chat", json={"model": SMALL, "stream": False})
        assert chat.json()["done_reason"] == "load"
        assert "message" in chat.json()
        lines = http.post("/api/generate", json={"model": SMALL, "prompt": "a b"}).text
        assert all(line for line in lines.split("\n")[:-1])  # NDJSON without blank lines
        assert http.post("/api/show", json={"model": SMALL}).json()["model_info"]


def test_standin_evicts_by_shortest_keep_alive_not_lru(ollama_server_factory: Any) -> None:
    server = ollama_server_factory(max_loaded=2)
    client = ollama.Client(host=server.host)
    client.generate(model=SMALL, keep_alive="1m")
    client.generate(model=MEDIUM, keep_alive="1h")
    client.generate(model=SMALL)  # SMALL is the most recently used, yet goes first
    client.generate(model=BIG)
    assert sorted(server.loaded_names()) == sorted([MEDIUM, BIG])
    sticky = client.ps().models
    assert [m.model for m in sticky] == [MEDIUM, BIG]  # by expires_at: 1h before the 5m default


def test_standin_answers_503_when_its_queue_is_full(ollama_server_factory: Any) -> None:
    server = ollama_server_factory(max_queue=0)
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=server.host).generate(model=SMALL)
    assert caught.value.status_code == 503
    assert "maximum pending requests exceeded" in caught.value.error


def test_a_lazy_model_learns_when_it_was_unloaded_behind_its_back(
    models: OllamaModels, ollama_server: OllamaStandIn
) -> None:
    lazy = models.lazy(SMALL)
    assert lazy.get() == SMALL
    models.unload(SMALL)
    assert not lazy.loaded
    with lazy:
        assert [i.name for i in models.loaded()] == [SMALL]
    assert ollama_server.load_requests(SMALL) == 2


def test_closing_takes_it_off_the_ladder(ollama_server: OllamaStandIn) -> None:
    models = OllamaModels(ollama_server.host)
    assert models in reclaim.registered()
    models.close()
    assert models not in reclaim.registered()
    assert models.reclaimable_bytes() == 0
    assert models.reclaim(10**9) == 0


def test_a_model_too_big_for_the_server_is_refused_with_the_servers_own_numbers(
    ollama_server_factory: Callable[..., OllamaStandIn],
) -> None:
    # A remote Ollama's room is unknown to resguard: its own check is the one that answers,
    # and its answer is a refusal for memory (a 503 to a web client), not a server error.
    server = ollama_server_factory(memory_bytes=2 * 10**9)
    with OllamaModels(server.host, headroom=Headroom(10**12), register=False) as models:
        with pytest.raises(ResourceExhausted, match="no room to load 'qwen3:8b'") as caught:
            models.ensure(BIG)
        assert caught.value.reason == "memory"
        assert caught.value.numbers["size_bytes"] == round(6.2 * 2**30)  # "6.2 GiB"
        assert caught.value.numbers["headroom_bytes"] == round(1.9 * 2**30)  # "1.9 GiB"
        assert isinstance(caught.value.__cause__, OllamaError)
        assert caught.value.__cause__.status_code == 500
        models.ensure(SMALL)  # fits alone
        assert [i.name for i in models.loaded()] == [SMALL]


@given(st.from_regex(r"[a-z][a-z0-9.\-]{0,12}(:[a-z0-9.]{1,8})?", fullmatch=True))
def test_canonical_names_are_stable(name: str) -> None:
    once = canonical(name)
    assert canonical(once) == once
    assert canonical(name.upper()) == once
    assert ":" in once


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from([("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]),
)
def test_standin_keep_alive_durations(number: int, unit: tuple[str, float]) -> None:
    suffix, factor = unit
    assert parse_keep_alive(f"{number}{suffix}") == pytest.approx(number * factor)
    assert parse_keep_alive(float(number)) == float(number)
    assert parse_keep_alive(-float(number) - 1) == float("inf")
    if number:
        with pytest.raises(BadRequest, match="missing unit"):
            parse_keep_alive(str(number))


def test_monitor_on_warning_unloads_the_idle_model_in_a_squeezed_cgroup(
    memory_cgroup: Any,
    ollama_server_factory: Callable[..., OllamaStandIn],
    ollama_clock: OffsetClock,
) -> None:
    from resguard.monitor import Monitor  # an ImportError fails the test (it used to skip it)
    from resguard.rules import Level, Policy, Threshold

    gb = 10**9
    catalogue = [
        CatalogueModel("idle:1b", gb, int(1.6 * gb)),
        CatalogueModel("busy:1b", gb, int(1.6 * gb)),
    ]
    server = ollama_server_factory(catalogue=catalogue, scale=1 / 16, cgroup=memory_cgroup.path)
    models = OllamaModels(server.host, clock=ollama_clock, wall_clock=ollama_clock)
    try:
        models.ensure("idle:1b")
        ollama_clock.advance(reclaim.DEFAULT_MIN_IDLE_S + 5)
        with models.using("busy:1b"):
            usage = memory_cgroup.usage_bytes()
            memory_cgroup.set_limit(usage + 24 * 2**20)
            policy = Policy([Threshold("memory.percent", ">", 85, level=Level.WARNING)])
            monitor = Monitor(
                policy=policy,
                cgroup=str(memory_cgroup.path),
                sources=[models.as_source()],
                psi_trigger=False,
                reclaim_to="80%",
                reclaim="process",  # the models registered process-wide (the default)
            )
            monitor.sample_slow()
            state = monitor.sample_now()
            assert state.level == Level.WARNING
            assert state.snapshot.ollama is not None
            assert {i.name for i in state.snapshot.ollama} == {"idle:1b", "busy:1b"}
            used_before = state.snapshot.memory.used

            report = monitor.reclaim_now()

            assert [i.name for i in models.loaded()] == ["busy:1b"]
            monitor.sample_slow()
            after = monitor.sample_now()
            assert after.snapshot.memory.used is not None
            assert used_before is not None
            assert after.snapshot.memory.used < used_before - 80 * 2**20
            assert after.level == Level.OK
            assert report.freed_bytes > 80 * 2**20
            assert memory_cgroup.oom_kills() == 0
    finally:
        models.close()


# ---------------------------------------------------------------- a misbehaving server
# What each misbehaviour must be reported as (a part of the OllamaError's message).
REASONS = {
    "hang": "within 0.5 s (the deadline covers",
    "drip": "within 0.5 s (the deadline covers",
    "drip_headers": "within 0.5 s (the deadline covers",
    "http500": "HTTP 500",
    "drop": "cannot reach Ollama",
    "malformed": "not the Ollama API",
    "wrong_shape": "not the Ollama API",
    "deep": "not the Ollama API",
    "huge": "more than 8.0 MiB",
    "huge_chunked": "more than 8.0 MiB",
}
TIMEOUT_S = 0.5
BOUND_S = TIMEOUT_S + 1.0  # generous: the deadline plus the machine's slack


def _sync_calls(models: OllamaModels) -> dict[str, Callable[[], object]]:
    return {
        "loaded": models.loaded,
        "installed": models.installed,
        "estimate_bytes": lambda: models.estimate_bytes(SMALL),
        "unload": lambda: models.unload(SMALL),
        "ensure": lambda: models.ensure(SMALL),
        "unload_idle": lambda: models.unload_idle(0),
        "lazy.get": lambda: models.lazy(SMALL).get(),
        "using": lambda: models.using(SMALL).__enter__(),
        "uses": models.uses(SMALL)(lambda: None),
        "client.ps": models.client.ps,
    }


@pytest.mark.parametrize("mode", list(REASONS))
def test_every_call_ends_within_its_deadline_whatever_the_server_does(mode: str) -> None:
    with (
        MisbehavingServer(mode) as server,
        OllamaModels(server.host, timeout=TIMEOUT_S, register=False) as models,
    ):
        for what, call in _sync_calls(models).items():
            started = time.monotonic()
            with pytest.raises(
                (OllamaError, httpx.HTTPError, ollama.ResponseError, ValueError, RecursionError)
            ) as caught:
                call()
            elapsed = time.monotonic() - started
            assert elapsed < BOUND_S, f"{what} took {elapsed:.1f} s against a {mode} server"
            if what == "client.ps":
                continue  # the raw client: bounded by resguard's transport, not translated
            assert isinstance(caught.value, OllamaError), (what, caught.value)
            if what in ("loaded", "unload", "ensure", "unload_idle", "using"):
                assert REASONS[mode] in str(caught.value), (what, str(caught.value))
            assert caught.value.__cause__ is not None
        quiet_calls: tuple[tuple[str, Callable[[], object]], ...] = (
            ("reclaimable_bytes", models.reclaimable_bytes),
            ("reclaim", lambda: models.reclaim(10**9)),
            ("source", lambda: models.as_source().sample()["ollama"]),
        )
        for what, quiet in quiet_calls:
            started = time.monotonic()
            assert quiet() in (0, None), what  # the ladder and the source never raise
            assert time.monotonic() - started < BOUND_S, what


@pytest.mark.parametrize("mode", list(REASONS))
@pytest.mark.anyio
async def test_every_async_call_ends_within_its_deadline_whatever_the_server_does(
    mode: str,
) -> None:
    with MisbehavingServer(mode) as server:
        async with AsyncOllamaModels(server.host, timeout=TIMEOUT_S, register=False) as models:
            calls: dict[str, Callable[[], Any]] = {
                "loaded": models.loaded,
                "installed": models.installed,
                "unload": lambda: models.unload(SMALL),
                "ensure": lambda: models.ensure(SMALL),
                "unload_idle": lambda: models.unload_idle(0),
            }
            for what, call in calls.items():
                started = time.monotonic()
                with pytest.raises(OllamaError) as caught:
                    await call()
                elapsed = time.monotonic() - started
                assert elapsed < BOUND_S, f"{what} took {elapsed:.1f} s ({mode})"
                assert REASONS[mode] in str(caught.value), (what, str(caught.value))


def test_a_huge_answer_is_not_read_in_full(ollama_server: OllamaStandIn) -> None:
    with (
        MisbehavingServer("huge") as server,
        OllamaModels(server.host, timeout=30, max_answer="64KiB", register=False) as models,
    ):
        started = time.monotonic()
        with pytest.raises(OllamaError, match=r"more than 64\.0 KiB"):
            models.loaded()
        assert time.monotonic() - started < 1.0  # refused on its Content-Length
    with OllamaModels(ollama_server.host, max_answer="64KiB", register=False) as models:
        assert models.loaded() == ()  # a normal answer is well under the cap


def test_the_load_request_has_its_own_deadline(ollama_server_factory: Any) -> None:
    slow = CatalogueModel("slow:1b", 1_000_000, 2_000_000, load_s=1.5)
    server = ollama_server_factory(catalogue=[slow])
    with OllamaModels(server.host, timeout=0.5, load_timeout=10, register=False) as models:
        assert models.ensure("slow:1b").name == "slow:1b"  # 1.5 s load, 0.5 s timeout
    with OllamaModels(server.host, timeout=0.5, load_timeout=0.5, register=False) as models:
        models.unload("slow:1b")
        started = time.monotonic()
        with pytest.raises(OllamaError, match=r"did not finish loading 'slow:1b' within 0\.5 s"):
            models.ensure("slow:1b")
        assert time.monotonic() - started < 0.5 + 1.0


@pytest.mark.parametrize("mode", ["hang", "drip", "malformed", "huge", "drop", "http500"])
def test_monitor_source_degrades_to_none_with_one_warning(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    from resguard.monitor import Monitor

    with (
        MisbehavingServer(mode) as server,
        OllamaModels(server.host, timeout=0.5, register=False) as models,
    ):
        monitor = Monitor(sources=[models.as_source()], reclaim=False, psi_trigger=False)
        caplog.set_level(logging.WARNING, logger="resguard")
        for _ in range(3):
            started = time.monotonic()
            monitor.sample_slow()
            assert time.monotonic() - started < 0.5 + 1.0
            assert monitor.sample_now().snapshot.ollama is None
        failing = [r for r in caplog.records if "is failing" in r.getMessage()]
        assert len(failing) == 1, [r.getMessage() for r in failing]


@pytest.mark.parametrize(
    "host",
    [
        "http://127.0.0.1:99999",
        "nonsense::host",
        "",
        "  ",
        "ftp://127.0.0.1:11434",
        "http://",
        "http://a b:1",
        "http://127.0.0.1:",
        "[::zz]:80",
        "http://h:1?x=1",
        5,
    ],
)
def test_a_host_that_is_not_one_is_an_invalid_value_quoting_it(host: Any) -> None:
    with pytest.raises((InvalidValue, InvalidType)) as caught:
        OllamaModels(host, register=False)
    assert repr(host) in str(caught.value)
    with pytest.raises((InvalidValue, InvalidType)):
        AsyncOllamaModels(host, register=False)


def test_hosts_are_read_as_the_ollama_client_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = {
        "1.2.3.4": "http://1.2.3.4:11434",
        ":56789": "http://127.0.0.1:56789",
        "http://example.com": "http://example.com:80",
        "https://example.com": "https://example.com:443",
        "example.com:56789/path/": "http://example.com:56789/path",
        "[::1]:8080": "http://[::1]:8080",
        "HTTP://Localhost:5": "http://localhost:5",
    }
    for text, expected in cases.items():
        assert parse_host(text) == expected
        with OllamaModels(text, register=False) as models:
            assert models.host == expected
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:99999")
    with pytest.raises(InvalidValue, match="OLLAMA_HOST"):
        OllamaModels(register=False)
    monkeypatch.delenv("OLLAMA_HOST")
    assert parse_host(None) == "http://127.0.0.1:11434"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"timeout": 0}, InvalidValue),
        ({"timeout": float("nan")}, InvalidValue),
        ({"timeout": float("inf")}, InvalidValue),
        ({"timeout": "soon"}, InvalidValue),
        ({"timeout": None}, InvalidType),
        ({"load_timeout": -1}, InvalidValue),
        ({"max_answer": 0}, InvalidValue),
        ({"max_answer": "lots"}, InvalidValue),
        ({"size_factor": float("nan")}, InvalidValue),
        ({"size_factor": float("inf")}, InvalidValue),
        ({"size_factor": "2"}, InvalidType),
        ({"unload_timeout": 0}, InvalidValue),
        ({"reclaim_min_idle": -1}, InvalidValue),
        ({"keep_alive": "-soon"}, InvalidValue),
        ({"keep_alive": float("nan")}, InvalidValue),
        ({"clock": 3}, InvalidType),
        ({"register": "no"}, InvalidType),
        ({"default_keep_alive": [1]}, InvalidType),
    ],
)
def test_ollama_arguments_are_checked_with_the_value_as_typed(
    kwargs: dict[str, Any], error: type
) -> None:
    kwargs = {"register": False, **kwargs}
    with pytest.raises(error) as caught:
        OllamaModels("127.0.0.1:1", **kwargs)
    value = next(v for k, v in kwargs.items() if k != "register" or len(kwargs) == 1)
    assert repr(value).strip("'") in str(caught.value)
    with pytest.raises(error):
        AsyncOllamaModels("127.0.0.1:1", **kwargs)


def test_an_empty_model_name_from_the_server_is_an_ollama_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"models": [{"name": "", "model": "", "size": 1}]})

    client = ollama.Client(host="http://127.0.0.1:1", transport=httpx.MockTransport(handler))
    with OllamaModels(client=client, register=False) as models:
        with pytest.raises(OllamaError, match="not the Ollama API"):
            models.loaded()


HOSTILE = (
    st.text(max_size=16)
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.none()
    | st.booleans()
    | st.sampled_from([10**400, "1e999", "nan", "-1", "http://[::1", ":99999", [1]])
)


@given(
    value=HOSTILE,
    argument=st.sampled_from(
        [
            "host",
            "timeout",
            "load_timeout",
            "max_answer",
            "keep_alive",
            "default_keep_alive",
            "size_factor",
            "unload_timeout",
            "reclaim_min_idle",
        ]
    ),
)
def test_hostile_arguments_give_only_documented_errors(value: Any, argument: str) -> None:
    try:
        if argument == "host":
            OllamaModels(value, register=False).close()
        else:
            OllamaModels("127.0.0.1:1", register=False, **{argument: value}).close()
    except (InvalidValue, InvalidType):
        pass


@given(name=st.text(max_size=20) | st.none() | st.integers())
def test_model_names_give_a_key_or_a_documented_error(name: Any) -> None:
    try:
        key = canonical(name)
    except (InvalidValue, InvalidType):
        return
    assert key == key.strip()
    assert ":" in key


def test_a_hanging_name_lookup_is_inside_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    release = threading.Event()

    def hanging_lookup(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        raise socket.gaierror("resolver gave up")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_lookup)
    try:
        with OllamaModels("ollama.invalid:11434", timeout=0.5, register=False) as models:
            started = time.monotonic()
            with pytest.raises(OllamaError, match=r"within 0\.5 s"):
                models.loaded()
            assert time.monotonic() - started < 0.5 + 1.0
    finally:
        release.set()


def test_an_error_page_is_quoted_short(ollama_server: OllamaStandIn) -> None:
    ollama_server.fail(500, "x" * 100_000, paths=["/api/ps"])
    with OllamaModels(ollama_server.host, register=False) as models:
        with pytest.raises(OllamaError) as caught:
            models.loaded()
    assert caught.value.status_code == 500
    assert len(str(caught.value)) < 500


@pytest.mark.parametrize("bad_host", ["garbage::", "http://[::1"])
def test_a_malformed_ollama_host_variable_does_not_break_the_import(bad_host: str) -> None:
    # The ollama package builds a client from $OLLAMA_HOST at import and raises ValueError;
    # resguard.ollama must still import, say what is wrong where a host is needed, and work
    # with an explicit host.
    code = (
        "import os, resguard\n"
        "import resguard.ollama as o\n"
        "try:\n"
        "    o.OllamaModels()\n"
        "except resguard.InvalidValue as error:\n"
        "    print('refused:', error)\n"
        "o.OllamaModels(host='http://127.0.0.1:9')\n"
        "print('env kept:', os.environ['OLLAMA_HOST'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OLLAMA_HOST": bad_host},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"refused: OLLAMA_HOST={bad_host!r}" in done.stdout
    assert f"env kept: {bad_host}" in done.stdout


def test_source_is_the_deprecated_name_of_as_source(models: OllamaModels) -> None:
    with pytest.warns(DeprecationWarning, match="as_source"):
        source = models.source()
    assert source.sample() == models.as_source().sample() == {"ollama": ()}


def test_idle_tracking_runs_on_the_monotonic_clock(ollama_server: OllamaStandIn) -> None:
    # resguard's own record of use is on clock= (monotonic); only idle_since is wall time.
    clock, wall_s = ManualClock(), time.time()
    with OllamaModels(
        ollama_server.host, clock=clock, wall_clock=lambda: wall_s, register=False
    ) as models:
        models.ensure(SMALL)
        clock.advance(120)
        (info,) = models.loaded()
        assert info.idle_since == pytest.approx(wall_s - 120)
        assert models.unload_idle(min_idle="3m") == []
        assert models.unload_idle(min_idle="1m") == [SMALL]


def test_a_wall_clock_that_is_not_callable_is_an_invalid_type() -> None:
    with pytest.raises(InvalidType, match="wall_clock=3"):
        OllamaModels("127.0.0.1:1", wall_clock=3, register=False)  # type: ignore[arg-type]


def test_the_standin_runs_as_a_command_on_the_port_given() -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "resguard.testing.ollama", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert f"http://127.0.0.1:{port}" in server.stdout.readline()
        client = ollama.Client(host=f"http://127.0.0.1:{port}")
        client.generate(model=SMALL)
        assert [m.model for m in client.ps().models] == [SMALL]
    finally:
        server.terminate()
        server.wait(timeout=30)
        assert server.stdout is not None
        server.stdout.close()


def test_the_standin_needs_only_the_standard_library_and_resguard_does_not_import_it() -> None:
    code = (
        "import sys, resguard\n"
        "assert 'resguard.testing' not in sys.modules\n"
        "from resguard.testing.ollama import OllamaStandIn\n"
        "with OllamaStandIn() as server:\n"
        "    assert server.host.startswith('http://127.0.0.1:')\n"
        "print([m for m in ('httpx', 'ollama', 'pydantic', 'anyio') if m in sys.modules])\n"
    )
    assert run_python(code).strip() == "[]"


@pytest.mark.anyio
async def test_async_callers_in_worker_threads_use_the_one_async_client(
    ollama_server: OllamaStandIn, ollama_clock: OffsetClock
) -> None:
    async with AsyncOllamaModels(
        ollama_server.host, clock=ollama_clock, wall_clock=ollama_clock, register=False
    ) as models:
        await models.ensure(SMALL, keep_alive="1h")
        ollama_clock.advance(reclaim.DEFAULT_MIN_IDLE_S + 1)
        # the ladder and the Monitor source, as the Monitor's task loops call them
        assert await anyio.to_thread.run_sync(models.reclaimable_bytes) == 1_514_584_145
        sampled = (await anyio.to_thread.run_sync(models.as_source().sample))["ollama"]
        assert isinstance(sampled, tuple)
        assert [i.name for i in sampled] == [SMALL]
        assert await anyio.to_thread.run_sync(models.reclaim, 1) == 1_514_584_145
        assert vars(models)["_sync_face"] is None  # no second, sync client was made
        assert await models.loaded() == ()
        # from a thread that is not an AnyIO worker: a sync client over the same record
        await models.ensure(SMALL)
        ollama_clock.advance(reclaim.DEFAULT_MIN_IDLE_S + 1)
        assert models.reclaimable_bytes() == 1_514_584_145
        assert vars(models)["_sync_face"] is not None


def test_a_client_of_your_own_is_named_by_host_or_not_at_all(ollama_server: OllamaStandIn) -> None:
    # resguard does not read the client's private httpx client for its URL: host= names it.
    client = ollama.Client(host=ollama_server.host)
    with OllamaModels(ollama_server.host, client=client, register=False) as named:
        assert named.host == ollama_server.host
        assert named.client is client
        assert named.loaded() == ()
    with OllamaModels(client=client, register=False) as unnamed:
        assert unnamed.host == "ollama"
        assert unnamed.loaded() == ()


def test_models_and_their_lazies_are_on_the_ladder_they_were_registered_with(
    ollama_server: OllamaStandIn,
) -> None:
    ladder = reclaim.Ladder(lambda: 0)
    with OllamaModels(ollama_server.host, register=ladder) as models:
        lazy = models.lazy(SMALL)
        assert models in ladder.reclaimables.registered()
        assert lazy in ladder.reclaimables.registered()
        assert models not in reclaim.registered()  # not process-wide: another Monitor's
        assert lazy not in reclaim.registered()  # ladder cannot unload them
        assert models.reclaim_min_idle_s == reclaim.DEFAULT_MIN_IDLE_S
    assert models not in ladder.reclaimables.registered()
    with pytest.raises(InvalidType, match="register="):
        OllamaModels(ollama_server.host, register="yes")  # type: ignore[arg-type]


def test_a_stopped_standin_answers_nothing_on_a_kept_alive_connection(
    ollama_server_factory: Callable[..., OllamaStandIn],
) -> None:
    server = ollama_server_factory()
    with OllamaModels(server.host, register=False) as models:
        assert models.loaded() == ()  # the client keeps this connection open
        server.stop()
        with pytest.raises(OllamaError):  # it answered on, as if still up
            models.loaded()
