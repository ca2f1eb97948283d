"""What resguard knows about an Ollama server beyond ``/api/ps``: the keep-alives it set,
when it last used each model (by its monotonic clock), which are in use, the sizes Ollama
reported and the load times. One book is shared by the faces of one server."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from resguard import reclaim as _reclaim
from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard.models import LazyModel
from resguard.ollama import _core
from resguard.ollama._names import canonical
from resguard.snapshot import OllamaModelInfo

__all__ = ["PS_FRESH_S", "Book", "log"]

log = get_logger("resguard.ollama")
PS_FRESH_S = 2.0  # an estimate reads /api/ps again (to learn a size) at most this often


class Book:
    """The shared record; its methods take the clocks' readings under one lock."""

    def __init__(
        self,
        host: str,
        *,
        keep_alive_s: float | None,
        default_keep_alive_s: float | None,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self.host = host
        self.keep_alive_s = keep_alive_s
        self.default_keep_alive_s = default_keep_alive_s
        self.clock = clock
        self.wall_clock = wall_clock
        self.lock = threading.Lock()
        self.set_keep_alive_s: dict[str, float] = {}
        self.last_used: dict[str, float] = {}  # by self.clock (monotonic)
        self.in_use: dict[str, int] = {}
        self.sizes: dict[str, int] = {}  # learned: the size /api/ps last reported loaded
        self.disk_sizes: dict[str, int] = {}  # the size /api/tags last reported on disk
        self.ps_read_s: float | None = None  # when /api/ps was last read (self.clock)
        self.load_s: dict[str, float] = {}
        self.lazies: weakref.WeakValueDictionary[str, LazyModel[str]] = (
            weakref.WeakValueDictionary()
        )
        self.faults = FaultLog(log)

    def touch(self, name: str) -> None:
        with self.lock:
            self.last_used[name] = self.clock()

    def busy(self, name: str) -> bool:
        lazy = self.lazies.get(name)
        return self.in_use.get(name, 0) > 0 or (lazy is not None and lazy.pinned)

    @contextlib.contextmanager
    def mark_in_use(self, name: str) -> Iterator[None]:
        with self.lock:
            self.in_use[name] = self.in_use.get(name, 0) + 1
        try:
            yield
        finally:
            with self.lock:
                self.in_use[name] -= 1
                if not self.in_use[name]:
                    del self.in_use[name]
                self.last_used[name] = self.clock()

    def infos(self, response: Any) -> tuple[OllamaModelInfo, ...]:
        """An ``/api/ps`` answer as OllamaModelInfo, with the idle times resguard knows."""
        return tuple(self.info(item) for item in response.models)

    def ps_is_fresh(self) -> bool:
        """Whether ``/api/ps`` was read within :data:`PS_FRESH_S` (its sizes are learned)."""
        read = self.ps_read_s
        return read is not None and self.clock() - read < PS_FRESH_S

    def info(self, item: Any) -> OllamaModelInfo:
        name = canonical(item.model or item.name or "")
        expires_at = item.expires_at.timestamp() if item.expires_at is not None else None
        learned = _core.learned_bytes(item.size)
        if learned is not None:
            self.sizes[name] = learned
        else:  # 0, negative or absurd: unknown, so its disk size is the estimate again
            self.sizes.pop(name, None)
        size = learned or 0  # what unloading it frees: nothing known
        used = self.last_used.get(name)
        since = _core.idle_since(
            wall_now=self.wall_clock(),
            busy=self.busy(name),
            expires_at=expires_at,
            keep_alive_s=self.set_keep_alive_s.get(name, self.default_keep_alive_s),
            idle_for_s=None if used is None else self.clock() - used,
        )
        fields: dict[str, Any] = {
            "name": name,
            "size": size,
            "size_vram": int(item.size_vram or 0),
            "expires_at": expires_at,
            "idle_since": since,
            "context_length": item.context_length,
        }
        return OllamaModelInfo(**fields)

    def victims(
        self,
        infos: Sequence[OllamaModelInfo],
        exclude: str | None = None,
        min_idle_s: float = 0.0,
        *,
        unknown_is_idle: bool = False,
    ) -> list[OllamaModelInfo]:
        return _core.victims(
            infos,
            wall_now=self.wall_clock(),
            busy=self.busy,
            exclude=exclude,
            min_idle_s=min_idle_s,
            unknown_is_idle=unknown_is_idle,
        )

    def loaded_as(self, name: str, keep_alive_s: float | None, elapsed_s: float) -> None:
        with self.lock:
            if keep_alive_s is not None:
                self.set_keep_alive_s[name] = keep_alive_s
            elif name not in self.set_keep_alive_s and self.keep_alive_s is not None:
                self.set_keep_alive_s[name] = self.keep_alive_s
            self.load_s[name] = elapsed_s
            self.last_used[name] = self.clock()

    def forget(self, name: str) -> None:
        """*name* was unloaded: its keep-alive is no longer known, its lazy model reloads."""
        with self.lock:
            self.set_keep_alive_s.pop(name, None)
        lazy = self.lazies.get(name)
        if lazy is not None:
            lazy._forget()  # its next use loads (and admits) it again

    def cost(self) -> float:
        loads = list(self.load_s.values())
        return _reclaim.Cost.MODEL + (sum(loads) / len(loads) if loads else 0.0)
