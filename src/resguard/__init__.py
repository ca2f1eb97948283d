"""resguard: see memory and CPU pressure early and act on it.

The layers: sense (:func:`snapshot`, :class:`Sampler`, :func:`top_processes`), judge
(:class:`Policy` of :class:`Threshold` and friends, :mod:`resguard.presets`), the
:class:`Monitor`, and act (:class:`Guard`, the reclaim ladder in :mod:`resguard.reclaim`,
:class:`LRUCache`, :func:`memoize`, :class:`LazyModel`, :class:`ModelPool`). Integrations
are submodules imported on demand: :mod:`resguard.asgi`, :mod:`resguard.ollama`,
:mod:`resguard.docker`, :mod:`resguard.prometheus`, :mod:`resguard.notebook`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from resguard._errors import (
    ConfigError,
    DockerError,
    IntegrationError,
    InvalidState,
    InvalidType,
    InvalidValue,
    OllamaError,
    ResguardError,
    ResourceExhausted,
    UnknownMetric,
)
from resguard.units import (
    Amount,
    format_bytes,
    format_duration,
    format_size,
    parse_bytes,
    parse_duration,
    parse_percent,
    resolve_bytes,
)

if TYPE_CHECKING:  # the names below load on first use (PEP 562); type checkers see them now
    from resguard import presets, reclaim
    from resguard.cache import CacheInfo, CacheStats, LRUCache, Memoized, ValueTooLarge, memoize
    from resguard.guard import Admission, Guard, GuardStats, limit_self
    from resguard.models import HeadroomSource, LazyModel, ModelPool
    from resguard.monitor import Monitor, State
    from resguard.processes import ProcessTable, top_processes
    from resguard.profile import Profile
    from resguard.profile import profile as profile
    from resguard.reclaim import Cost, Ladder, Reclaimable, ReclaimReport
    from resguard.rules import (
        Breach,
        ContainerThreshold,
        FanThreshold,
        LeakDetector,
        Level,
        Offender,
        Policy,
        PolicyState,
        ProcessCount,
        ProcessThreshold,
        Rule,
        SensorThreshold,
        ThermalPressure,
        Threshold,
        TimeToLimit,
        Verdict,
    )
    from resguard.snapshot import (
        ContainersInfo,
        ContainersMemory,
        ContainerStats,
        CpuInfo,
        FanSpeed,
        GpuInfo,
        GpuProcess,
        HeatInfo,
        MemoryInfo,
        OllamaModelInfo,
        PressureInfo,
        PressureLine,
        ProcessInfo,
        ProcessSelf,
        ResourcePressure,
        Sampler,
        Snapshot,
        SwapInfo,
        TemperatureSensor,
    )
    from resguard.snapshot import snapshot as snapshot  # the function shadows its module's name

# Name -> module for everything that loads on first use, so that `import resguard` stays
# cheap and a script that only parses sizes never pays for snapshots, rules or caches.
_LAZY: dict[str, str] = {
    "CacheInfo": "resguard.cache",
    "CacheStats": "resguard.cache",
    "LRUCache": "resguard.cache",
    "Memoized": "resguard.cache",
    "ValueTooLarge": "resguard.cache",
    "memoize": "resguard.cache",
    "Admission": "resguard.guard",
    "Guard": "resguard.guard",
    "GuardStats": "resguard.guard",
    "limit_self": "resguard.guard",
    "LazyModel": "resguard.models",
    "HeadroomSource": "resguard.models",
    "ModelPool": "resguard.models",
    "Monitor": "resguard.monitor",
    "State": "resguard.monitor",
    "presets": "resguard.presets",
    "ProcessTable": "resguard.processes",
    "Profile": "resguard.profile",
    "profile": "resguard.profile",
    "top_processes": "resguard.processes",
    "Cost": "resguard.reclaim",
    "Ladder": "resguard.reclaim",
    "ReclaimReport": "resguard.reclaim",
    "Reclaimable": "resguard.reclaim",
    "reclaim": "resguard.reclaim",
    "Breach": "resguard.rules",
    "ContainerThreshold": "resguard.rules",
    "FanThreshold": "resguard.rules",
    "SensorThreshold": "resguard.rules",
    "ThermalPressure": "resguard.rules",
    "LeakDetector": "resguard.rules",
    "Level": "resguard.rules",
    "Offender": "resguard.rules",
    "Policy": "resguard.rules",
    "PolicyState": "resguard.rules",
    "ProcessCount": "resguard.rules",
    "ProcessThreshold": "resguard.rules",
    "Rule": "resguard.rules",
    "Threshold": "resguard.rules",
    "TimeToLimit": "resguard.rules",
    "Verdict": "resguard.rules",
    "ContainerStats": "resguard.snapshot",
    "ContainersInfo": "resguard.snapshot",
    "ContainersMemory": "resguard.snapshot",
    "CpuInfo": "resguard.snapshot",
    "FanSpeed": "resguard.snapshot",
    "HeatInfo": "resguard.snapshot",
    "TemperatureSensor": "resguard.snapshot",
    "MemoryInfo": "resguard.snapshot",
    "OllamaModelInfo": "resguard.snapshot",
    "PressureInfo": "resguard.snapshot",
    "PressureLine": "resguard.snapshot",
    "ProcessInfo": "resguard.snapshot",
    "ProcessSelf": "resguard.snapshot",
    "ResourcePressure": "resguard.snapshot",
    "Sampler": "resguard.snapshot",
    "Snapshot": "resguard.snapshot",
    "GpuInfo": "resguard.snapshot",
    "GpuProcess": "resguard.snapshot",
    "SwapInfo": "resguard.snapshot",
    "snapshot": "resguard.snapshot",
}
# names whose attribute is the module itself: snapshot and profile are callable modules
# (``rg.snapshot()`` calls the function), so ``import resguard.snapshot as m`` binds the
# module whether or not ``rg.snapshot`` was used first
_SUBMODULES = frozenset({"presets", "reclaim", "snapshot", "profile"})

__all__ = [
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


__version__: str  # read on first use: importlib.metadata costs milliseconds at import


def _read_version() -> str:
    """The installed distribution's version, else the one in the source tree's pyproject."""
    from importlib import metadata

    try:
        return metadata.version("resguard")
    except metadata.PackageNotFoundError:
        pass
    import sys
    from pathlib import Path

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as handle:
            version = tomllib.load(handle)["project"]["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return "0+unknown"
    return version if isinstance(version, str) else "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        globals()[name] = version = _read_version()
        return version
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'resguard' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if name in _SUBMODULES else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext resguard``: the ``%%resguard`` cell magic and ``%resguard_top``."""
    from resguard import notebook

    notebook.load_ipython_extension(ipython)
