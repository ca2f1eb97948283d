"""The guardian's ``ollama-unload-idle``: unload the Ollama models idle longer than
``idle_for``, never one with a request in flight.

**Idle since.** Ollama does not say when a model was last used. Its ``/api/ps`` gives
``expires_at`` = the end of the last request + the model's keep-alive, so a model is idle
since ``expires_at - keep_alive`` (:mod:`resguard.ollama` derives it, with the server's
``OLLAMA_KEEP_ALIVE``: the *keep_alive* argument, else the variable in this environment,
else Ollama's default of 5 minutes). When the guardian itself saw ``expires_at`` move
(a request ended), the model is idle at most since then. A model whose idle time cannot be
derived (kept "forever") is never unloaded.

**In flight.** While a request runs Ollama does *not* update ``expires_at`` (protocol
§4.3): a busy model looks exactly as idle as before its request began. So before each
unload the guardian, for that one model:

1. re-reads ``/api/ps`` and skips it when it is gone, when its ``expires_at`` moved since
   the first read (a request ended meanwhile: it is in use), or when ``expires_at`` lies
   in the past ("Stopping...": an unload is already waiting for a request to end);
2. sends Ollama a no-op request (``/api/generate`` with an empty prompt, no keep-alive,
   the model's own ``context_length``): Ollama restarts a model's idle timer, and so
   moves its ``expires_at``, only when its *last* in-flight request ends. The no-op ends
   at once, so ``expires_at`` moves if and only if no other request was in flight;
3. re-reads ``/api/ps`` (for up to :data:`CHECK_WAIT_S`: Ollama restarts the timer in its
   scheduler a moment after it answers) and unloads the model only when ``expires_at``
   moved; a busy model costs that wait.

Limits, honestly: a request that starts in the milliseconds between step 3 and the unload
is not seen (Ollama then unloads the model when that request ends, without cutting it
short); a model unloaded by someone else between steps 1 and 2 is loaded again by the
no-op; a model a client loaded with runner options other than ``num_ctx`` (``num_gpu``,
``num_batch``) may be reloaded by the no-op, since Ollama reloads a runner whose options
differ; a model that cannot generate (an embedding model) answers the no-op with an
error and is then skipped, never unloaded; a keep-alive shorter than the one assumed makes
a model look idle for longer than it is (the no-op still keeps a busy one); the no-op
restarts an idle model's timer, so one whose unload then fails looks freshly used. A dry run
sends nothing, the no-op included, so it cannot tell a busy model from an idle one: it
says which models *would* be checked.

The models are measured where Ollama lives, on the machine, not in a service's cgroup;
``freed_bytes`` is the model's size as ``/api/ps`` reported it before the unload.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from resguard._errors import ResguardError
from resguard._modules.log import get_logger
from resguard.guardian._actions import Outcome, Target
from resguard.units import format_duration

if TYPE_CHECKING:
    from resguard.snapshot import OllamaModelInfo

__all__ = ["CHECK_WAIT_S", "DEFAULT_KEEP_ALIVE_S", "UNREACHABLE", "ModelUnloader"]

_logger = get_logger("resguard.guardian")

DEFAULT_KEEP_ALIVE_S = 300.0
"""Ollama's own default keep-alive (``OLLAMA_KEEP_ALIVE`` unset): 5 minutes."""
UNREACHABLE = "ollama unreachable"
"""Why ``ollama-unload-idle`` skipped: Ollama did not answer."""
CHECK_WAIT_S = 2.0
"""How long after its no-op request a model's expiry has to move for it to count as idle."""
_ACTION = "ollama-unload-idle"
_SEEN_MAX = 256  # models whose expiry the unloader remembers


class ModelUnloader:
    """Unloads idle Ollama models for the guardian (see the module's docstring).

    *host* as :class:`resguard.ollama.OllamaModels` takes it; *keep_alive* the server's
    ``OLLAMA_KEEP_ALIVE`` (``None``: this environment's, else 5 minutes); *timeout_s* the
    deadline of each request; *wall_clock* the epoch clock ``expires_at`` is compared with,
    *clock* and *sleep* time the wait for the expiry to move.
    *models* is a ready ``OllamaModels`` (tests); otherwise one is made at first use.
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        keep_alive: float | str | None = None,
        timeout_s: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        models: Any = None,
    ) -> None:
        self.host = host
        self.timeout_s = timeout_s
        self._keep_alive = keep_alive
        self._wall_clock = wall_clock
        self._clock = clock
        self._sleep = sleep
        self._models = models
        self._down = False  # warned that Ollama is unreachable, until it answers again
        self._seen: dict[str, tuple[float | None, float, bool]] = {}

    def _client(self) -> Any:
        if self._models is None:
            from resguard.ollama import OllamaModels

            keep_alive = self._keep_alive
            if keep_alive is None:
                keep_alive = os.environ.get("OLLAMA_KEEP_ALIVE") or DEFAULT_KEEP_ALIVE_S
            make = partial(
                OllamaModels,
                self.host,
                timeout=self.timeout_s,
                unload_timeout=self.timeout_s,
                wall_clock=self._wall_clock,
                register=False,
            )
            try:
                self._models = make(default_keep_alive=keep_alive)
            except ResguardError as error:  # a bad OLLAMA_KEEP_ALIVE: Ollama's default
                _logger.warning("OLLAMA_KEEP_ALIVE: %s; assuming 5 minutes", error)
                self._models = make(default_keep_alive=DEFAULT_KEEP_ALIVE_S)
        return self._models

    def close(self) -> None:
        if self._models is not None:
            self._models.close()

    def _loaded(self) -> tuple[OllamaModelInfo, ...] | None:
        """``/api/ps`` now, or ``None`` (warned once until it answers again)."""
        try:
            infos: tuple[OllamaModelInfo, ...] = self._client().loaded()
        except ImportError as error:
            self._warn(f"the ollama extra is not installed ({error})")
            return None
        except Exception as error:  # OllamaError, or anything odd: never into the guardian
            self._warn(str(error))
            return None
        if self._down:
            _logger.warning("ollama answers again")
            self._down = False
        return infos

    def _warn(self, why: str) -> None:
        if not self._down:
            _logger.warning("ollama-unload-idle: ollama unreachable: %s", why)
            self._down = True

    def _idle_since(self, info: OllamaModelInfo, now: float) -> float | None:
        """Since when *info* is idle: as Ollama's expiry says, and at most since the guardian
        saw that expiry move (a request ended then)."""
        before = self._seen.get(info.name)
        moved = before is not None and before[0] != info.expires_at
        if before is None or moved:
            if len(self._seen) >= _SEEN_MAX:
                self._seen.clear()
            self._seen[info.name] = (info.expires_at, now, moved)
        _, seen_at, was_moved = self._seen[info.name]
        since = info.idle_since
        if since is not None and was_moved:
            since = max(since, seen_at)
        return since

    def unload_idle(self, idle_for_s: float, *, dry_run: bool) -> list[Outcome]:
        """Unload the models idle at least *idle_for_s* (or, in a dry run, say which would
        be checked and unloaded); one outcome per model acted on, or one that says why
        nothing was."""
        infos = self._loaded()
        if infos is None:
            return [Outcome(_ACTION, None, dry_run, "skipped", UNREACHABLE)]
        now = self._wall_clock()
        idle = []
        for info in infos:
            since = self._idle_since(info, now)
            if since is not None and now - since >= idle_for_s:
                idle.append(info)
        if not idle:
            why = f"no model idle for {format_duration(idle_for_s)}"
            return [Outcome(_ACTION, None, dry_run, "skipped", why)]
        if dry_run:
            return [Outcome(_ACTION, Target(model=info.name), True, "would") for info in idle]
        return [self._unload_one(info) for info in idle]

    def _unload_one(self, listed: OllamaModelInfo) -> Outcome:
        target = Target(model=listed.name)
        why = self._busy(listed)
        if why is not None:
            return Outcome(_ACTION, target, False, "skipped", why)
        try:
            self._client().unload(listed.name)
        except Exception as error:  # OllamaError: down, or still listed after the deadline
            return Outcome(_ACTION, target, False, "failed", str(error))
        self._seen.pop(listed.name, None)
        return Outcome(_ACTION, target, False, "done", freed_bytes=listed.size)

    def _busy(self, listed: OllamaModelInfo) -> str | None:
        """Why *listed* must not be unloaded now (steps 1-3 of the module's docstring), or
        ``None`` when it is proved idle."""
        first = self._fresh(listed.name)
        if isinstance(first, str):
            return first
        if first.expires_at != listed.expires_at:
            return "in use (a request ended since /api/ps was read)"
        if first.expires_at is None or first.expires_at < self._wall_clock():
            return "stopping (an unload is waiting for a request to end)"
        options = {"num_ctx": first.context_length} if first.context_length else None
        try:
            self._client().client.generate(model=first.name, prompt="", options=options)
        except Exception as error:
            return f"the no-op request that checks it is idle failed: {error}"
        return self._moved(first)

    def _moved(self, first: OllamaModelInfo) -> str | None:
        """``None`` once ``/api/ps`` shows *first*'s expiry moved after the no-op; why not
        when it has not within :data:`CHECK_WAIT_S` (Ollama restarts the idle timer in its
        scheduler, a moment after it answers)."""
        deadline = self._clock() + CHECK_WAIT_S
        pause_s = 0.01
        while True:
            after = self._fresh(first.name)
            if isinstance(after, str):
                return after
            if after.expires_at != first.expires_at:
                return None
            if self._clock() >= deadline:
                return "a request is in flight (its expiry did not move after a no-op)"
            self._sleep(pause_s)
            pause_s = min(pause_s * 2, 0.2)

    def _fresh(self, name: str) -> OllamaModelInfo | str:
        infos = self._loaded()
        if infos is None:
            return UNREACHABLE
        for info in infos:
            if info.name == name:
                return info
        return "no longer loaded"
