"""Where Ollama meets the rest of resguard: a LazyModel for an Ollama model, and the
Monitor source."""

from __future__ import annotations

from typing import TYPE_CHECKING

from resguard.models import LazyModel, ModelPool
from resguard.ollama._names import canonical

if TYPE_CHECKING:
    from resguard.ollama._face import Face

__all__ = ["OllamaLazy", "OllamaSource"]


class OllamaLazy(LazyModel[str]):
    """A LazyModel for an Ollama model: admission unloads idle Ollama models when needed.

    Its loader, unloader and size run in threads, through ``owner._in_thread``; it is on
    the same reclaim ladder as its owner (``register=`` of :class:`OllamaModels`)."""

    def __init__(
        self,
        owner: Face,
        name: str,
        keep_alive_s: float | None,
        idle_ttl: float | str | None,
        pool: ModelPool | None,
    ) -> None:
        self._owner = owner
        self._model_name = name
        steps = owner._steps

        def do_load() -> str:
            owner._in_thread(lambda: steps.load(name, keep_alive_s, reserve=False))
            return name

        def do_unload(_: str) -> None:
            owner._in_thread(lambda: steps.unload(name, steps.unload_timeout_s))

        super().__init__(
            do_load,
            do_unload,
            size=lambda: owner._in_thread(lambda: steps.estimate_bytes(name)),
            idle_ttl=idle_ttl,
            name=f"ollama:{canonical(name)}",
            guard=owner.guard,
            headroom=owner.headroom,  # where Ollama runs: what a pool reads for this model
            pool=pool,
            register=owner._registry if owner._registry is not None else False,
        )

    def _make_room(self) -> None:
        if self.pool is not None:
            super()._make_room()
        else:
            owner, name, size = self._owner, self._model_name, self.size_bytes
            owner._in_thread(lambda: owner._steps.admit(name, size))


class OllamaSource:
    """Monitor source: ``sample()`` returns ``{"ollama": (OllamaModelInfo, ...)}``.

    When Ollama cannot be read it returns ``{"ollama": None}`` and logs the fault once.
    ``models`` is an :class:`OllamaModels` or :class:`AsyncOllamaModels`.
    """

    fields = ("ollama",)

    def __init__(self, models: Face, name: str = "ollama") -> None:
        self.models = models
        self.name = name

    def sample(self) -> dict[str, object]:
        return self.models._in_thread(lambda: self.models._steps.sample(self.name))
