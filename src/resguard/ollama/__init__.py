"""Ollama model management: see loaded models, unload idle ones, load with an admission check.

Ollama's own scheduler evicts by shortest keep-alive (not least recently used) and never
reacts to memory pressure from other programs. :class:`OllamaModels` (and its async twin
:class:`AsyncOllamaModels`), built on the official ``ollama`` client, lets resguard do that:

- ``loaded()`` lists the models in memory (``/api/ps``) as
  :class:`resguard.snapshot.OllamaModelInfo`;
- ``unload(name)`` sends ``keep_alive: 0`` and polls ``/api/ps`` until the model is gone;
- ``unload_idle(min_idle=...)`` unloads models idle for at least that long;
- ``ensure(name)`` loads a model after checking there is room for it where Ollama runs
  (:class:`OllamaHeadroom`: the machine, or the cgroup of Ollama's process, for a local
  server; a ``headroom=`` of yours for a remote one) for the size Ollama reported when it
  was last loaded, else the ``/api/tags`` disk size times ``size_factor``, unloading idle
  models first when needed;
- ``lazy(name)`` gives a :class:`resguard.LazyModel`, ``uses(name)`` a decorator for model
  calls, ``using(name)`` a context manager that marks a model as in use;
- the object is on the reclaim ladder: under WARNING it unloads idle models, least
  recently used first, before anything is refused;
- ``as_source()`` is a Monitor source sampling ``{"ollama": (OllamaModelInfo, ...)}``
  (``source()`` is its deprecated old name).

**Idle since.** Ollama does not report when a model was last used. resguard derives it
from ``expires_at - keep_alive`` when it knows the keep-alive in force (the one it set
itself, or ``default_keep_alive`` when you tell it the server's ``OLLAMA_KEEP_ALIVE``), and
from its own record of the last call it made through :meth:`OllamaModels.uses` /
``using`` / ``ensure``; it takes the later of the two. A model resguard is using right now
is idle since "now". Otherwise ``idle_since`` is ``None`` (unknown), and such models are
treated as the least recently used ones by the ladder. resguard's own record is kept on
``clock=`` (monotonic, like every resguard clock); ``idle_since`` and ``expires_at`` are
wall-clock epoch seconds, from ``wall_clock=`` (default :func:`time.time`).

**Layout.** The decisions (which models to unload for a headroom, since when a model is
idle, what fits) are pure functions in ``_core``; each call is written once, in
``_steps``, as a generator that yields the I/O it needs; :class:`OllamaModels` performs
that I/O by calling the official ``ollama.Client``, :class:`AsyncOllamaModels` by awaiting
``ollama.AsyncClient``. The bounded transport is ``_transport``. The stand-in server for
tests is :mod:`resguard.testing.ollama`; the ``resguard ollama`` command is
:mod:`resguard.cli.ollama`.

**Deadlines and size caps.** Every HTTP request resguard makes ends within ``timeout``
(default 10 s) counted from its start — connecting, sending and the whole answer together,
whatever the server does (no answer, one byte at a time, an endless body) — except the
request that loads a model, which ends within ``load_timeout`` (default 5 minutes: Ollama
answers it only once the weights are in memory). An answer larger than ``max_answer``
(default 8 MiB; a real ``/api/ps`` is a few KiB) is not read further. Both fail as
:class:`resguard.OllamaError` saying which bound was hit. The bounds live in the HTTP
transport that resguard gives the client it makes, so they hold for the ``ollama`` client's
own methods on ``models.client`` too; a ``client=`` of your own keeps its own transport
and timeouts. A public call's whole run is bounded by the requests it makes:
``loaded()``/``installed()``: ``timeout``; ``unload()``: two requests plus
``unload_timeout`` of polling; ``ensure()``: a few requests plus one load.

**Errors.** Every failure of the server — down, past its deadline, too large an answer, an
HTTP error, a dropped connection, an answer of the wrong shape — is raised as
:class:`resguard.OllamaError` (``status_code`` set when the server answered, the original
exception as ``__cause__``), except Ollama's own refusal of a load for memory
("model requires more system memory"), which is :class:`resguard.ResourceExhausted`
(``reason="memory"``, Ollama's figures in ``numbers``). A host that is not a URL
(``"nonsense::host"``, port 99999) is an :class:`resguard.InvalidValue` when the object is
made. The Monitor source and the
ladder never raise: they log the fault once (until it recovers) and carry on.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from resguard._errors import OllamaError
from resguard.ollama._async import AsyncOllamaModels
from resguard.ollama._client import ollama  # noqa: F401 - first: names the extra if missing
from resguard.ollama._glue import OllamaSource
from resguard.ollama._names import canonical as canonical  # public, not in __all__ (as before)
from resguard.ollama._names import parse_host
from resguard.ollama._sync import OllamaModels
from resguard.ollama._where import OllamaHeadroom
from resguard.snapshot import OllamaModelInfo

__all__ = [
    "AsyncOllamaModels",
    "OllamaError",
    "OllamaHeadroom",
    "OllamaModelInfo",
    "OllamaModels",
    "OllamaSource",
    "parse_host",
]

for _public in (
    AsyncOllamaModels,
    OllamaHeadroom,
    OllamaModels,
    OllamaSource,
    canonical,
    parse_host,
):
    _public.__module__ = __name__


def __getattr__(name: str) -> Any:
    if name == "cli":  # the command moved to resguard.cli.ollama (presentation lives there)
        warnings.warn("resguard.ollama.cli moved to resguard.cli.ollama.cli", DeprecationWarning, 2)
        return importlib.import_module("resguard.cli.ollama").cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
