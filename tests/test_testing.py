"""resguard.testing: the public test doubles behave as documented and name their public home."""

from __future__ import annotations

import math
import pickle
import re
import subprocess
import sys
from typing import Any

import pytest

import resguard
import resguard.testing
from resguard import InvalidType, InvalidValue
from resguard.testing import ManualClock
from resguard.testing.ollama import CATALOGUE, OllamaStandIn


def test_public_test_doubles_name_resguard_testing_as_their_module() -> None:
    # Reprs, pickles and the API reference (autodoc skips a class whose __module__ is
    # another module's) show the path users import it from, not a private module.
    for name in resguard.testing.__all__:
        public = getattr(resguard.testing, name)
        module = getattr(public, "__module__", None)
        if module is not None:
            assert not any(part.startswith("_") for part in module.split(".")), (name, module)
    assert ManualClock.__module__ == "resguard.testing"
    assert repr(ManualClock()).startswith("<resguard.testing.ManualClock object")


def test_a_manual_clock_pickles_by_its_public_path_and_keeps_its_time() -> None:
    clock = ManualClock(start_s=5.0)
    clock.advance(2.5)
    data = pickle.dumps(clock)
    assert b"resguard.testing" in data
    assert b"_modules" not in data
    assert pickle.loads(data)() == 7.5


@pytest.mark.parametrize(
    ("options", "error", "quoted"),
    [
        ({"port": -1}, InvalidValue, "port=-1"),
        ({"port": 70000}, InvalidValue, "port=70000"),
        ({"port": "80"}, InvalidType, "port='80'"),
        ({"port": True}, InvalidType, "port=True"),
        ({"bind": 3}, InvalidType, "bind=3"),
        ({"max_loaded": 0}, InvalidValue, "max_loaded=0"),
        ({"max_queue": -1}, InvalidValue, "max_queue=-1"),
        ({"scale": 0}, InvalidValue, "scale=0"),
        ({"memory_bytes": -5}, InvalidValue, "memory_bytes=-5"),
        ({"default_keep_alive_s": math.nan}, InvalidValue, "default_keep_alive_s=nan"),
        ({"unload_lag_s": -1}, InvalidValue, "unload_lag_s=-1"),
        ({"clock": 3}, InvalidType, "clock=3"),
        ({"catalogue": 3}, InvalidType, "catalogue=3"),
        ({"catalogue": ["llama"]}, InvalidType, "'llama'"),
    ],
)
def test_the_ollama_standin_refuses_bad_options_quoting_them(
    options: dict[str, Any], error: type[Exception], quoted: str
) -> None:
    with pytest.raises(error, match=re.escape(quoted)):
        OllamaStandIn(**options)


def test_the_ollama_standin_takes_its_catalogue_from_any_iterable() -> None:
    server = OllamaStandIn(catalogue=(model for model in CATALOGUE), max_queue=0)
    assert len(server.catalogue) == len(CATALOGUE)


@pytest.mark.parametrize("argv", [["--port", "-1"], ["--port", "70000"], ["--max-loaded", "0"]])
def test_the_ollama_standin_command_answers_a_bad_option_with_usage_not_a_traceback(
    argv: list[str],
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "resguard.testing.ollama", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"error: {argv[0].lstrip('-').replace('-', '_')}={argv[1]}" in done.stderr


@pytest.mark.parametrize(
    ("call", "error", "quoted"),
    [
        (lambda: ManualClock(start_s="x"), InvalidType, "'x'"),  # type: ignore[arg-type]
        (lambda: ManualClock(start_s=math.inf), InvalidValue, "inf"),
        (lambda: ManualClock().advance("5"), InvalidType, "'5'"),  # type: ignore[arg-type]
        (lambda: ManualClock().advance(math.inf), InvalidValue, "inf"),
        (lambda: ManualClock().advance(math.nan), InvalidValue, "nan"),
        (lambda: ManualClock().advance(-1), InvalidValue, "-1"),
        (lambda: resguard.testing.make_snapshot(memory_percent="x"), InvalidValue, "'x'"),
        (lambda: resguard.testing.make_snapshot(memory_percent=150), InvalidValue, "150"),
        (lambda: resguard.testing.make_snapshot(limit=0), InvalidValue, "0"),
        (lambda: resguard.testing.make_snapshot(used=10, memory_percent=5), InvalidValue, "both"),
        (lambda: resguard.testing.make_snapshot(memory_level=3), InvalidValue, "3"),
        (
            lambda: resguard.testing.make_container("c", memory_used=1, memory_limit=0),
            InvalidValue,
            "0",
        ),
        (lambda: resguard.testing.KernelTree(5), InvalidType, "5"),  # type: ignore[arg-type]
    ],
)
def test_the_test_doubles_refuse_bad_arguments_with_a_resguard_error_quoting_them(
    call: Any, error: type[Exception], quoted: str
) -> None:
    with pytest.raises(error, match=re.escape(quoted)):
        call()


def test_the_snapshot_factory_reads_sizes_and_percents_as_people_type_them() -> None:
    snap = resguard.testing.make_snapshot(limit="8GiB", memory_percent="97%", rss="100MB")
    assert snap.memory.limit == 8 * 2**30
    assert snap.memory.percent == 97.0
    assert snap.process.rss == 100 * 10**6
    assert resguard.testing.make_container("c", memory_used="1GiB").memory_used == 2**30


def test_the_snapshot_factory_puts_a_mac_under_memory_pressure_for_the_presets() -> None:
    """A macOS pressure level of 4 is critical for the laptop preset, without a Mac."""
    critical = resguard.testing.make_snapshot(memory_level=4, memory_percent=40)
    assert critical.pressure.memory_level == 4
    assert resguard.presets.laptop().evaluate(critical).level is resguard.Level.CRITICAL
    calm = resguard.testing.make_snapshot(memory_percent=40)
    assert calm.pressure.memory_level is None
    assert resguard.presets.laptop().evaluate(calm).level is resguard.Level.OK


def test_a_kernel_tree_takes_a_str_root_and_names_its_files_when_asked_for_another(
    tmp_path: Any,
) -> None:
    tree = resguard.testing.KernelTree(str(tmp_path))
    assert tree.path("meminfo").endswith("proc/meminfo")
    with pytest.raises(InvalidValue, match=re.escape("memory.max")):
        tree.damage("no-such-file", "garbage")


def test_unknown_memory_leaves_every_memory_figure_unknown_and_says_why() -> None:
    from resguard.testing import MEMINFO_EMPTY, make_snapshot, unknown_memory

    blind = unknown_memory(make_snapshot(), swap=True)
    memory = blind.memory
    assert (memory.total, memory.limit, memory.used, memory.available, memory.percent) == (
        (None,) * 5
    )
    assert memory.source == "unknown"
    assert blind.swap.total is None
    assert blind.faults == (MEMINFO_EMPTY,)
    assert resguard.Policy([]).evaluate(blind).level is resguard.Level.OK


def test_a_kernel_tree_is_built_where_there_is_no_proc(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On macOS or Windows the tree's ``self`` files are lines of the kernel's shape, so
    tests of the linux readers run there too."""
    import builtins

    from resguard.snapshot import Sampler

    real_open = builtins.open

    def no_proc(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_proc)
    tree = resguard.testing.KernelTree(tmp_path)
    monkeypatch.setattr(builtins, "open", real_open)
    snap = Sampler(tree.roots).sample()
    assert snap.process.rss == 16 * 2**20
    assert snap.process.num_threads == 1
    assert snap.memory.total == 16 * 2**30  # the tree's meminfo


def test_use_backend_switches_the_defaults_and_gives_the_old_one_back() -> None:
    from resguard.snapshot import Sampler, default_backend, default_sampler
    from resguard.testing import use_backend

    before = default_backend()
    with use_backend("psutil"):
        assert default_backend() == "psutil"
        assert default_sampler().backend == "psutil"
        assert Sampler().backend == "psutil"
        assert resguard.snapshot().memory.source_detail == "psutil.virtual_memory()"
        with use_backend("linux"):
            assert default_sampler().backend == "linux"
        assert default_sampler().backend == "psutil"
    assert default_backend() == before
    with pytest.raises(InvalidValue, match="'PSUTIL'"), use_backend("PSUTIL"):  # type: ignore[arg-type]
        pass
    assert default_backend() == before


def test_make_process_reads_its_rss_as_typed_and_refuses_garbage() -> None:
    from resguard import InvalidValue
    from resguard.testing import make_process

    assert make_process(1, rss="410MiB").rss == 410 * 2**20
    with pytest.raises(InvalidValue, match="'lots'"):
        make_process(1, rss="lots")  # a row the rules would fail on later, as an unknown
