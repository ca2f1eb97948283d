"""A stand-in Ollama server, so that code which talks to Ollama is tested without Ollama.

It speaks the part of the Ollama HTTP API that model managers use — ``/``,
``/api/version``, ``/api/tags``, ``/api/ps``, ``/api/show``, ``/api/generate``,
``/api/chat``, ``/api/embed`` — over real HTTP on loopback, with Ollama's scheduler rules,
and each loaded model held by a real child process (so unloading frees measurable memory).
The official ``ollama`` client, resguard's :class:`resguard.ollama.OllamaModels` and your
own code see it as an Ollama server::

    from resguard.testing.ollama import OllamaStandIn

    with OllamaStandIn() as server:
        client = ollama.Client(host=server.host)
        client.generate(model="llama3.2:1b")          # loads it
        assert server.loaded_names() == ["llama3.2:1b"]

From a shell: ``python -m resguard.testing.ollama --port 11434`` serves until Ctrl-C.

It needs nothing but the standard library (``import resguard`` does not import it).
:class:`OffsetClock` is the wall clock a test shares with the stand-in to move keep-alive
timers forward without sleeping. :class:`resguard.testing.misbehaving.MisbehavingServer`
is the opposite: a server that answers in one chosen bad way.
"""

from __future__ import annotations

from resguard.testing.ollama._catalogue import (
    CATALOGUE,
    VERSION,
    BadRequest,
    CatalogueModel,
    OffsetClock,
    parse_keep_alive,
)
from resguard.testing.ollama._server import OllamaStandIn

__all__ = [
    "CATALOGUE",
    "VERSION",
    "BadRequest",
    "CatalogueModel",
    "OffsetClock",
    "OllamaStandIn",
    "parse_keep_alive",
]

for _public in (BadRequest, CatalogueModel, OffsetClock, OllamaStandIn):
    _public.__module__ = __name__
