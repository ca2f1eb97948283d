"""resguard: see memory and CPU pressure early and act on it."""

from __future__ import annotations

from resguard._errors import (
    ConfigError,
    DockerError,
    IntegrationError,
    InvalidType,
    InvalidValue,
    OllamaError,
    ResguardError,
    ResourceExhausted,
    UnknownMetric,
)
from resguard.processes import ProcessTable, top_processes
from resguard.snapshot import (
    ContainersInfo,
    ContainerStats,
    CpuInfo,
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
)
from resguard.snapshot import snapshot as snapshot  # the function shadows its module's name
from resguard.units import (
    format_bytes,
    format_duration,
    parse_bytes,
    parse_duration,
    parse_percent,
    resolve_bytes,
)

__all__ = [
    "ContainerStats",
    "ContainersInfo",
    "CpuInfo",
    "MemoryInfo",
    "OllamaModelInfo",
    "PressureInfo",
    "PressureLine",
    "ProcessInfo",
    "ProcessSelf",
    "ProcessTable",
    "ResourcePressure",
    "Sampler",
    "Snapshot",
    "SwapInfo",
    "snapshot",
    "top_processes",
    "ConfigError",
    "DockerError",
    "IntegrationError",
    "InvalidType",
    "InvalidValue",
    "OllamaError",
    "ResguardError",
    "ResourceExhausted",
    "UnknownMetric",
    "format_bytes",
    "format_duration",
    "parse_bytes",
    "parse_duration",
    "parse_percent",
    "resolve_bytes",
]
