"""The stand-in's catalogue of installed models, its wall clock and keep-alive parsing."""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CATALOGUE",
    "FOREVER_S",
    "GIB",
    "VERSION",
    "BadRequest",
    "CatalogueModel",
    "HTTPError",
    "OffsetClock",
    "parse_keep_alive",
    "tags",
    "timestamp",
]

VERSION = "0.12.3"
FOREVER_S = 292 * 365.25 * 86400.0
GIB = 1024**3


class OffsetClock:
    """Wall-clock epoch seconds that a test can move forward without sleeping."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


@dataclass(frozen=True)
class CatalogueModel:
    """One installed model: ``disk_bytes`` as /api/tags reports, ``loaded_bytes`` as /api/ps
    (its ``size``), ``vram_bytes`` the part of that /api/ps reports on the GPU (its
    ``size_vram``: 0 runs all on the CPU, ``loaded_bytes`` all on the GPU, in between a
    split as ``ollama ps`` prints it: "48%/52% CPU/GPU")."""

    name: str
    disk_bytes: int
    loaded_bytes: int
    family: str = "llama"
    parameter_size: str = "1B"
    quantization_level: str = "Q4_K_M"
    capabilities: tuple[str, ...] = ("completion",)
    load_s: float = 0.0
    context_length: int = 4096
    vram_bytes: int = 0

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()

    def details(self, *, for_ps: bool = False) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }


CATALOGUE: tuple[CatalogueModel, ...] = (
    CatalogueModel("llama3.2:1b", 1_321_098_329, 1_514_584_145, "llama", "1.2B", "Q8_0"),
    CatalogueModel("llama3.2:3b", 2_019_393_189, 3_518_155_776, "llama", "3.2B"),
    CatalogueModel(
        "gpt-oss:20b",
        13_780_173_724,
        13_421_772_800,
        "gptoss",
        "20.9B",
        "MXFP4",
        ("completion", "tools", "thinking"),
    ),
    CatalogueModel("qwen3:8b", 5_225_388_164, 6_654_289_920, "qwen3", "8.2B"),
    CatalogueModel("qwen2.5:0.5b", 397_821_319, 650_000_000, "qwen2", "494.03M"),
)

_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class BadRequest(Exception):
    """A request the server answers with 400 and this message."""


def parse_keep_alive(value: object) -> float | None:
    """Seconds (``math.inf`` for forever) from a JSON keep_alive, per protocol §3."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRequest("Unsupported type: 'bool'")
    if isinstance(value, (int, float)):
        return math.inf if value < 0 else float(value)
    if not isinstance(value, str):
        raise BadRequest(f"Unsupported type: '{type(value).__name__}'")
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    if not body:
        raise BadRequest(f'time: invalid duration "{value}"')
    position, total = 0, 0.0
    while position < len(body):
        match = _DURATION.match(body, position)
        if match is None:
            if re.fullmatch(r"[0-9.]+", body[position:]):
                raise BadRequest(f'time: missing unit in duration "{value}"')
            raise BadRequest(f'time: invalid duration "{value}"')
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        position = match.end()
    return math.inf if sign < 0 else total


def timestamp(epoch_s: float, *, utc: bool = False) -> str:
    if utc:
        return (
            _dt.datetime.fromtimestamp(epoch_s, _dt.timezone.utc).isoformat().replace("+00:00", "Z")
        )
    return _dt.datetime.fromtimestamp(epoch_s).astimezone().isoformat()


def tags(catalogue: Iterable[CatalogueModel], now: float) -> dict[str, Any]:
    """The ``/api/tags`` answer for *catalogue* (modified a day before *now*)."""
    models = [
        {
            "name": model.name,
            "model": model.name,
            "modified_at": timestamp(now - 86400),
            "size": model.disk_bytes,
            "digest": model.digest,
            "details": model.details(),
        }
        for model in catalogue
    ]
    return {"models": models}


class HTTPError(Exception):
    """A request the server answers with *status* and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
