"""The public surface does not drift, and `import resguard` stays cheap."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import resguard

from support import run_python

PUBLIC = sorted(
    [
        "Admission",
        "Amount",
        "Breach",
        "CacheInfo",
        "CacheStats",
        "ConfigError",
        "ContainerStats",
        "ContainerThreshold",
        "ContainersInfo",
        "ContainersMemory",
        "Cost",
        "CpuInfo",
        "DockerError",
        "FanSpeed",
        "FanThreshold",
        "GpuInfo",
        "GpuProcess",
        "Guard",
        "GuardStats",
        "HeadroomSource",
        "HeatInfo",
        "IntegrationError",
        "InvalidState",
        "InvalidType",
        "InvalidValue",
        "LRUCache",
        "Ladder",
        "LazyModel",
        "LeakDetector",
        "Level",
        "Memoized",
        "MemoryInfo",
        "ModelPool",
        "Monitor",
        "Offender",
        "OllamaError",
        "OllamaModelInfo",
        "Policy",
        "PolicyState",
        "PressureInfo",
        "PressureLine",
        "ProcessCount",
        "ProcessInfo",
        "ProcessSelf",
        "ProcessTable",
        "ProcessThreshold",
        "Profile",
        "ReclaimReport",
        "Reclaimable",
        "ResguardError",
        "ResourceExhausted",
        "ResourcePressure",
        "Rule",
        "Sampler",
        "SensorThreshold",
        "Snapshot",
        "State",
        "SwapInfo",
        "TemperatureSensor",
        "ThermalPressure",
        "Threshold",
        "TimeToLimit",
        "UnknownMetric",
        "ValueTooLarge",
        "Verdict",
        "format_bytes",
        "format_duration",
        "format_size",
        "limit_self",
        "load_ipython_extension",
        "memoize",
        "parse_bytes",
        "parse_duration",
        "parse_percent",
        "presets",
        "profile",
        "reclaim",
        "resolve_bytes",
        "snapshot",
        "top_processes",
    ]
)

HEAVY = [
    "docker",
    "ollama",
    "numpy",
    "pandas",
    "matplotlib",
    "IPython",
    "prometheus_client",
    "httpx",
    "pydantic",
    "requests",
    "uvicorn",
    "starlette",
]


def test_all_is_the_documented_surface() -> None:
    assert sorted(resguard.__all__) == PUBLIC


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(resguard, name) is not None
    assert name in dir(resguard)


def test_lazy_table_and_type_checking_imports_agree() -> None:
    tree = ast.parse(Path(resguard.__file__).read_text())
    checked: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                checked |= {alias.asname or alias.name for alias in statement.names}
    assert checked == set(resguard._LAZY)


def test_unknown_attributes_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Gaurd'"):
        resguard.Gaurd  # noqa: B018


def test_snapshot_is_callable_however_it_was_reached() -> None:
    """The module is callable too. (``import resguard.snapshot as m`` binds the package's
    attribute, which is the function once ``resguard.snapshot`` was used, e.g. by another
    test file's import; importlib returns the module whatever the order.)"""
    import importlib

    module = importlib.import_module("resguard.snapshot")
    assert module().memory.limit > 0  # type: ignore[operator]
    limit = resguard.snapshot().memory.limit
    assert limit is not None
    assert limit > 0
    assert module.Sampler is resguard.Sampler


def test_errors_form_one_hierarchy() -> None:
    for name in PUBLIC:
        value = getattr(resguard, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, resguard.ResguardError), name


def test_import_resguard_imports_no_heavy_package() -> None:
    out = run_python(f"import sys, resguard; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert out.strip() == "[]"


def test_using_the_core_imports_no_heavy_package() -> None:
    code = (
        "import sys, resguard as rg; rg.snapshot(); rg.Guard(); rg.LRUCache(max_items=2); "
        "rg.presets.laptop(); rg.Monitor(reclaim=False); "
        "rg.LazyModel(load=lambda: 1, size='1MiB'); "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    assert run_python(code).strip() == "[]"


@pytest.mark.parametrize(
    ("module", "extra", "blocked"),
    [
        ("resguard.docker", "docker", "docker"),
        ("resguard.ollama", "ollama", "ollama"),
        ("resguard.prometheus", "prometheus", "prometheus_client"),
        ("resguard.notebook", "notebook", "IPython"),
    ],
)
def test_a_missing_extra_names_the_pip_command(module: str, extra: str, blocked: str) -> None:
    code = f"""
import sys
sys.modules[{blocked!r}] = None  # as if the package were not installed
try:
    import {module}
except ImportError as error:
    print(error)
"""
    message = run_python(code)
    assert f"pip install 'resguard[{extra}]'" in message
    # the name 'resguard' on PyPI belongs to another project: the checkout's command too
    assert f"pip install -e '.[{extra}]'" in message


def test_every_public_name_is_in_the_api_reference() -> None:
    reference = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    documented = set()
    for line in reference.splitlines():
        for directive in (".. autoclass:: ", ".. autofunction:: ", ".. automodule:: resguard."):
            if line.startswith(directive):
                documented.add(line[len(directive) :].split()[0].split("(")[0])
    assert set(PUBLIC) - documented == set()


def test_version_falls_back_to_the_source_trees_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a checkout that was never installed: the version is pyproject's."""
    from importlib import metadata

    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    pyproject = Path(__file__).parent.parent / "pyproject.toml"
    expected = tomllib.loads(pyproject.read_text())["project"]["version"]
    assert resguard._read_version() == expected


SNAPSHOT_PUBLIC = sorted(
    [
        "BACKENDS",
        "ContainerStats",
        "ContainersInfo",
        "ContainersMemory",
        "CpuInfo",
        "FAULT_KINDS",
        "Fault",
        "FaultKind",
        "GpuInfo",
        "GpuMemory",
        "GpuProcess",
        "GpuReader",
        "GpuSummary",
        "gpu_percent",
        "ollama_processor",
        "read_gpus",
        "MemoryInfo",
        "OllamaModelInfo",
        "PressureInfo",
        "PressureLine",
        "ProcessInfo",
        "ProcessSelf",
        "ResourcePressure",
        "FanSpeed",
        "HeatInfo",
        "HeatReader",
        "Roots",
        "Sampler",
        "TemperatureSensor",
        "read_heat",
        "Snapshot",
        "SwapInfo",
        "UNITS",
        "Backend",
        "default_backend",
        "default_sampler",
        "invalidate_limits",
        "metric_paths",
        "metric_unit",
        "snapshot",
    ]
)


def test_the_sense_layers_surface_does_not_drift() -> None:
    """``resguard.snapshot`` and ``resguard.processes`` are where the backends are chosen
    and read; their names are public API too."""
    import importlib

    import resguard.processes

    snapshot_module = importlib.import_module("resguard.snapshot")  # not the function

    assert sorted(snapshot_module.__all__) == SNAPSHOT_PUBLIC
    assert sorted(resguard.processes.__all__) == [
        "ProcessTable",
        "describe",
        "is_kernel_thread",
        "top_processes",
    ]
    assert snapshot_module.BACKENDS == ("linux", "psutil")


def test_the_guardians_surface_does_not_drift() -> None:
    """``resguard.guardian`` is what a config's author and an embedding program use."""
    import resguard.guardian

    assert sorted(resguard.guardian.__all__) == [
        "ACTIONS",
        "ActionSpec",
        "Decision",
        "Effects",
        "Guardian",
        "GuardianConfig",
        "Journal",
        "Outcome",
        "PRESETS",
        "Planner",
        "Target",
        "check_path",
        "enable_hint",
        "guardian_command",
        "launchd_plist",
        "load_config",
        "load_policy",
        "parse_config",
        "systemd_unit",
        "unit_path",
    ]
    assert resguard.guardian.ACTIONS == ("notify", "ollama-unload-idle", "renice", "pause", "stop")
