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
from resguard.units import (
    format_bytes,
    format_duration,
    parse_bytes,
    parse_duration,
    parse_percent,
    resolve_bytes,
)

__all__ = [
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
