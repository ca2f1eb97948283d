"""Lazy model loaders and model pools that live within a memory budget.

A :class:`LazyModel` loads on first use — exactly once however many threads or tasks ask at
the same moment — and keeps the model while it earns its memory: ``with model as m:`` (or
``async with``) pins it, and a pinned model is never unloaded. An unpinned model is unloaded
after ``idle_ttl`` without use, and earlier when the machine is tight: a lazy model is on a
reclaim ladder (:mod:`resguard.reclaim`: ``register=monitor`` that Monitor's, the default
the process-wide one) at ``Cost.MODEL + reload seconds``, so the models that reload fastest
go first, once unused for ``reclaim_min_idle`` (30 s by default: a model a request has just
reloaded is not unloaded again by the same pressure).

Before loading, a model asks for room for its ``size``: from a Guard (``headroom_bytes()``,
and a reservation through ``guard.admit(reserve=size)`` while it loads) or, without one,
from :func:`resguard.snapshot` (``memory.available``). In a :class:`ModelPool` the pool
first evicts idle members, least recently used first; when that is not enough the load is
refused with :class:`~resguard.ResourceExhausted` instead of pushing the machine into swap.

When the headroom is unknown (the memory numbers could not be read: ``None``, never 0),
the load is admitted and a warning is logged once; a Guard's reservation still applies its
own ``on_unknown`` policy.

Idle expiry needs something to look at the clock: the pool and the ladder do, and
``unload_if_idle()`` can be called directly; besides these, one shared daemon thread (the
*sweeper*, for all models together, only while some model with a TTL is loaded) checks the
TTLs so that a model nobody touches again is still unloaded.

**Waiting and cancelling.** A caller that finds a load already in progress waits at most
``wait`` (default 10 minutes) and then gets ``ResourceExhausted(reason="timeout")``. In
async code every wait is cancellable: cancelling the caller of :meth:`LazyModel.aget` (or
``async with``) returns at once, also while it runs a *sync* loader in a worker thread. A
thread cannot be stopped, so that load goes on in its thread and, when it ends, its result
is **kept**: the model counts as loaded (its memory was admitted before it started), later
callers get it, and ``idle_ttl`` and the ladder unload it when nobody uses it. Callers that
were waiting for that load keep waiting for it (no second load starts meanwhile). An
``async def`` loader is cancelled with its caller; a waiter then starts the load again.
A loader that asks for its own model (``model.get()`` inside ``load``) gets
:class:`~resguard.InvalidState` at once instead of waiting for itself.
"""

from __future__ import annotations

from resguard.models._common import (
    DEFAULT_WAIT_S,
    HEADROOM_DEADLINE_S,
    HeadroomSource,
    headroom_from,
    machine_headroom_bytes,
)
from resguard.models._lazy import LazyModel
from resguard.models._pool import MIN_BUDGET_PERCENT, ModelPool

__all__ = [
    "DEFAULT_WAIT_S",
    "HEADROOM_DEADLINE_S",
    "MIN_BUDGET_PERCENT",
    "HeadroomSource",
    "LazyModel",
    "ModelPool",
    "headroom_from",
    "machine_headroom_bytes",
]

_headroom = headroom_from  # the old private name, until resguard.ollama imports headroom_from

for _public in (HeadroomSource, LazyModel, ModelPool, headroom_from, machine_headroom_bytes):
    _public.__module__ = __name__
del _public
