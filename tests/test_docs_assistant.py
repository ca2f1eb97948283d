"""The assistant tutorial's server, pasted as written, serves under uvicorn (issue 16, 9).

docs/tutorials/assistant-server.md's steps 1 and 3 are a ``server.py``; Sybil runs the
blocks but sends them no request, so a handler that answers 500 (a ``...`` body where a
``dict`` is promised) or a route shadowed by an earlier one passed unseen. This test
writes those two blocks to a file, runs ``uvicorn server:app`` in a memory cgroup with a
1 GiB limit (so the page's 80 % share is of a figure the test knows, not of whatever the
machine has in use) and calls each route the page names, the health paths included.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from support import free_port, wait_until

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


def start(folder: Path, cgroup: Any) -> tuple[subprocess.Popen[bytes], str]:
    """``uvicorn server:app`` in *folder*, inside *cgroup*; waits until it answers."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--app-dir", str(folder), "--port", str(port)]
    process = cgroup.spawn([*argv, "server:app"], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, f"uvicorn exited with {process.returncode}"
        try:
            httpx.get(f"{url}/livez", timeout=5)
        except httpx.TransportError:
            return False
        return True

    wait_until(answers, timeout_s=60, what="the tutorial's server to answer")
    return process, url


def test_the_pasted_server_answers_every_route_the_page_names(
    tmp_path: Path, memory_cgroup: Any
) -> None:
    (tmp_path / "server.py").write_text(server_source())
    memory_cgroup.set_limit(GiB)
    process, url = start(tmp_path, memory_cgroup)
    try:
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
    finally:
        process.terminate()
        process.wait(timeout=20)
