"""What ``resguard watch`` adds to its Monitor: the Ollama models, polled in a thread of
their own so a slow or hanging Ollama never delays a frame (the source hands the monitor
the latest answer at once)."""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

__all__ = ["OLLAMA_POLL_S", "OLLAMA_TIMEOUT_S", "OllamaFeed"]

OLLAMA_POLL_S = 2.0
OLLAMA_TIMEOUT_S = 0.5  # Ollama on loopback answers `ps` in milliseconds


class OllamaFeed:
    """A Monitor source for ``snapshot.ollama``: a daemon thread asks Ollama
    (``OLLAMA_HOST`` or 127.0.0.1:11434) for its loaded models every
    :data:`OLLAMA_POLL_S` with a :data:`OLLAMA_TIMEOUT_S` deadline; ``sample()`` returns
    the latest answer, ``None`` while Ollama does not answer."""

    name = "ollama"
    fields = ("ollama",)

    def __init__(self, models: Any, poll_s: float = OLLAMA_POLL_S) -> None:
        self._models = models
        self._poll_s = poll_s
        self._latest: tuple[Any, ...] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resguard watch ollama", daemon=True)

    @classmethod
    def if_installed(cls) -> OllamaFeed | None:
        """A feed when the ``ollama`` extra is installed, else ``None`` (watch then shows
        no Ollama line)."""
        if importlib.util.find_spec("ollama") is None:
            return None
        try:
            from resguard.ollama import OllamaModels

            models = OllamaModels(timeout=OLLAMA_TIMEOUT_S, register=False)
        except Exception:  # a bad OLLAMA_HOST, a broken client: no Ollama line
            return None
        return cls(models)

    def start(self) -> OllamaFeed:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._latest = tuple(self._models.loaded())
            except Exception:  # not running, hanging past the deadline: unknown
                self._latest = None
            self._stop.wait(self._poll_s)

    def sample(self) -> dict[str, Any]:
        return {"ollama": self._latest}
