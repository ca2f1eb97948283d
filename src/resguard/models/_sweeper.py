"""The sweeper: one daemon thread that unloads idle lazy models nobody touches again."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

from resguard._modules.log import emit
from resguard._modules.waiter import Waiter
from resguard.models._common import log

if TYPE_CHECKING:
    from resguard.models._lazy import LazyModel

__all__ = ["sweeper"]


class _Sweeper:
    """One daemon thread for all lazy models with a TTL; runs only while one is loaded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: weakref.WeakSet[LazyModel[Any]] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._waiter = Waiter()  # woken when a model is added: a shorter TTL may need it

    def add(self, model: LazyModel[Any]) -> None:
        with self._lock:
            self._models.add(model)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="resguard-model-sweeper", daemon=True
                )
                self._thread.start()
            else:
                self._waiter.wake()

    def _interval_s(self, models: list[LazyModel[Any]]) -> float:
        ttls = [m.idle_ttl_s for m in models if m.idle_ttl_s is not None]
        return min(30.0, max(0.05, min(ttls) / 4)) if ttls else 1.0

    def _run(self) -> None:
        while True:
            with self._lock:
                models = [m for m in self._models if m.loaded or m.loading]
                if not models:
                    self._thread = None
                    return
                interval_s = self._interval_s(models)
            del models  # hold no strong references while waiting
            self._waiter.wait_thread(interval_s)
            for model in list(self._models):
                try:
                    model.unload_if_idle()
                except Exception:  # never let one model stop the sweeper
                    emit(
                        log,
                        logging.ERROR,
                        "idle check of model %r failed",
                        model.name,
                        exc_info=True,
                    )


sweeper = _Sweeper()
