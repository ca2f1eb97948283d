"""Where Ollama meets the rest of resguard: a LazyModel for an Ollama model, and the
Monitor source."""

from __future__ import annotations

from typing import TYPE_CHECKING

from resguard.models import LazyModel, ModelPool
from resguard.ollama._names import canonical

if TYPE_CHECKING:
    from resguard.ollama._sync import OllamaModels

__all__ = ["OllamaLazy", "OllamaSource"]


class OllamaLazy(LazyModel[str]):
    """A LazyModel for an Ollama model: admission unloads idle Ollama models when needed."""

    def __init__(
        self,
        owner: OllamaModels,
        name: str,
        keep_alive_s: float | None,
        idle_ttl: float | str | None,
        pool: ModelPool | None,
    ) -> None:
        self._owner = owner
        self._model_name = name

        def do_load() -> str:
            owner.run(owner._steps.load(name, keep_alive_s, reserve=False))
            return name

        def do_unload(_: str) -> None:
            owner.unload(name)

        super().__init__(
            do_load,
            do_unload,
            size=lambda: owner.estimate_bytes(name),
            idle_ttl=idle_ttl,
            name=f"ollama:{canonical(name)}",
            guard=owner.guard,
            pool=pool,
        )

    def _make_room(self) -> None:
        if self.pool is not None:
            super()._make_room()
        else:
            self._owner.run(self._owner._steps.admit(self._model_name, self.size_bytes))


class OllamaSource:
    """Monitor source: ``sample()`` returns ``{"ollama": (OllamaModelInfo, ...)}``.

    When Ollama cannot be read it returns ``{"ollama": None}`` and logs the fault once.
    """

    fields = ("ollama",)

    def __init__(self, models: OllamaModels, name: str = "ollama") -> None:
        self.models = models
        self.name = name

    def sample(self) -> dict[str, object]:
        return self.models._threads().run(self.models._steps.sample(self.name))
