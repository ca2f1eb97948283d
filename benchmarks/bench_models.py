"""LazyModel's cost on the hot path: a pinned use against the alternatives people write.

Rows: ``with model as m: m(x)`` on a loaded LazyModel against calling the model directly
and against the common hand-rolled "global plus lock" lazy loader; ``model.get()``; and
the Ollama stand-in round trip that ``OllamaModels.ensure`` adds per call, for scale.
Run: ``.venv/bin/python benchmarks/run.py models``.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from resguard.models import LazyModel

from _harness import Table, Target, per_call_s


def _model(x: int) -> int:
    return x + 1


def run(table: Table) -> None:
    lazy = LazyModel(lambda: _model, size=1, name="bench", sweep=False, register=False)
    lazy.get()

    def pinned() -> None:
        with lazy as m:
            m(1)

    def plain() -> None:
        _model(1)

    lock = threading.Lock()
    holder: dict[str, object] = {}

    def hand_rolled() -> None:
        with lock:
            m = holder.get("m")
            if m is None:
                m = holder["m"] = _model
        m(1)  # type: ignore[operator]

    ours = per_call_s(pinned)
    table.compare(
        "LazyModel pinned use (`with model as m: m(x)`)",
        ours,
        "plain call `m(x)`",
        per_call_s(plain),
        Target.ours_at_most(2e-6, what="per use"),
    )
    table.compare(
        "LazyModel pinned use",
        ours,
        "global + lock lazy loader",
        per_call_s(hand_rolled),
        Target.cost_at_most(3, of="hand-rolled"),
    )
    table.compare(
        "LazyModel.get() (loaded, not pinned)",
        per_call_s(lambda: lazy.get()(1)),
        "plain call `m(x)`",
        per_call_s(plain),
        "",
    )
    _ollama_rows(table)


def _ollama_rows(table: Table) -> None:
    try:
        from resguard.ollama import OllamaModels
        from resguard.testing.ollama import OllamaStandIn
    except ImportError as error:  # the ollama extra is optional
        table.note("OllamaModels.ensure (loaded model)", f"skipped: {error}")
        return
    import ollama

    with OllamaStandIn() as server:
        client = ollama.Client(host=server.host)
        with OllamaModels(server.host, register=False) as models:
            models.ensure("llama3.2:1b")
            ours = per_call_s(lambda: models.ensure("llama3.2:1b"), repeat=3)
            theirs = per_call_s(lambda: client.ps(), repeat=3)
            table.compare(
                "OllamaModels.ensure (loaded, stand-in on loopback)",
                ours,
                "bare `client.ps()`",
                theirs,
                "≈ one /api/ps round trip",
            )
        client._client.close()
