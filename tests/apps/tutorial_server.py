"""The assistant tutorial's ``server.py``: its steps 1 and 3, as a reader pastes them.

docs/tutorials/assistant-server.md builds one server in two blocks, and deploy/kubernetes
runs that server (``uvicorn server:app``). The tests that serve it (the tutorial's own and
the deployed pod's) write this source to a ``server.py``, so the page, the Deployment and
the tests are one story.
"""

from __future__ import annotations

from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "tutorials" / "assistant-server.md"


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a page, in order."""
    blocks, rest = [], text
    while (start := rest.find("```python\n")) >= 0:
        rest = rest[start + len("```python\n") :]
        end = rest.index("```")
        blocks.append(rest[:end])
        rest = rest[end:]
    return blocks


def server_source() -> str:
    """Steps 1 and 3 of the page: the server's code (the other blocks are its test)."""
    blocks = python_blocks(PAGE.read_text())
    step1 = next(block for block in blocks if "with_metrics(" in block and "def build" not in block)
    step3 = next(block for block in blocks if "model_guard" in block)
    return step1 + "\n\n" + step3
