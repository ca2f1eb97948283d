"""Moved to :mod:`resguard.testing.ollama` (public); kept for old imports."""

from resguard.testing.ollama import (
    CATALOGUE,
    BadRequest,
    CatalogueModel,
    OffsetClock,
    OllamaStandIn,
    parse_keep_alive,
)

__all__ = [
    "CATALOGUE",
    "BadRequest",
    "CatalogueModel",
    "OffsetClock",
    "OllamaStandIn",
    "parse_keep_alive",
]
