"""The assistant tutorial's server, pasted as written, serves under uvicorn (issue 16, 9).

docs/tutorials/assistant-server.md's steps 1 and 3 are a ``server.py``; Sybil runs the
blocks but sends them no request, so a handler that answers 500 (a ``...`` body where a
``dict`` is promised) or a route shadowed by an earlier one passed unseen. This test
writes those two blocks to a file, runs ``uvicorn server:app`` in a memory cgroup with a
1 GiB limit (so the page's 80 % share is of a figure the test knows, not of whatever the
machine has in use) and calls each route the page names, the health paths included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from support import start_uvicorn

PAGE = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "assistant-server.md"
GiB = 2**30


def python_blocks(text: str) -> list[str]:
    """The page's ```python blocks, in order."""
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
    step1 = next(
        block for block in blocks if "app = FastAPI()" in block and "def build" not in block
    )
    step3 = next(block for block in blocks if "model_guard" in block)
    return step1 + "\n\n" + step3


def test_the_pasted_server_answers_every_route_the_page_names(
    tmp_path: Path, memory_cgroup: Any
) -> None:
    (tmp_path / "server.py").write_text(server_source())
    memory_cgroup.set_limit(GiB)
    server = start_uvicorn("--app-dir", str(tmp_path), "server:app", spawn=memory_cgroup.spawn)
    with server as running:
        url = running.url
        # step 1
        answer = httpx.post(f"{url}/speak", params={"text": "hi"}, timeout=10)
        assert (answer.status_code, answer.json()) == (200, {"text": "hi"})
        # step 3: the guarded model call, on its own path
        answer = httpx.post(f"{url}/speak/audio", params={"text": "hi"}, timeout=10)
        assert (answer.status_code, answer.content) == (200, b"hi")
        assert answer.headers["content-type"] == "audio/wav"
        # step 4: readiness as the page shows it, liveness served
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 200
        body = ready.json()
        assert (body["status"], body["ready"], body["level"]) == ("ready", True, "OK")
        assert set(body) >= {"breaches", "age_s"}
        for path in ("/livez", "/healthz"):
            alive = httpx.get(f"{url}{path}", timeout=10)
            assert (alive.status_code, alive.json()) == (200, {"status": "alive"})
