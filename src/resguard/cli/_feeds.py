"""What ``resguard watch`` adds to its Monitor: the process table when the policy does not
sample it, and the Ollama models, polled in a thread of their own so a slow or hanging
Ollama never delays a frame (the source hands the monitor the latest answer at once)."""

from __future__ import annotations

import importlib.util
import inspect
import threading
from typing import Any

__all__ = ["OLLAMA_POLL_S", "OLLAMA_TIMEOUT_S", "OllamaFeed", "ProcessFeed", "monitor_options"]

OLLAMA_POLL_S = 2.0
OLLAMA_TIMEOUT_S = 0.5  # Ollama on loopback answers `ps` in milliseconds


class ProcessFeed:
    """A Monitor source sampling the whole process table (watch shows it whatever the
    policy's rules read)."""

    name = "process table"
    fields = ("processes",)

    def __init__(self) -> None:
        from resguard.processes import ProcessTable

        self._table = ProcessTable()

    def sample(self) -> dict[str, Any]:
        return {"processes": tuple(self._table.sample())}


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


def monitor_options(policy: Any) -> tuple[dict[str, Any], bool]:
    """The Monitor keywords watch passes where this resguard's Monitor has them
    (``heat=True``, ``processes=True``), and whether watch must add a
    :class:`ProcessFeed` (the Monitor samples the table only for process rules)."""
    from resguard.monitor import Monitor
    from resguard.rules import ProcessCount, ProcessThreshold

    parameters = inspect.signature(Monitor).parameters
    options: dict[str, Any] = {"heat": True} if "heat" in parameters else {}
    if "processes" in parameters:
        options["processes"] = True
        return options, False
    samples = any(isinstance(rule, (ProcessThreshold, ProcessCount)) for rule in policy.rules)
    return options, not samples
