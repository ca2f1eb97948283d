"""The laptop guardian: a long-running agent that judges the machine by a policy from
``resguard.toml`` and acts on it (notify, unload idle Ollama models, renice, pause or
stop processes the user opted in by pattern), journalling every action."""

from __future__ import annotations

__all__: list[str] = []
