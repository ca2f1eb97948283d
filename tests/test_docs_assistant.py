"""The assistant tutorial's server, pasted as written, serves under uvicorn (issue 16, 9).

docs/tutorials/assistant-server.md's steps 1 and 3 are a ``server.py``; Sybil runs the
blocks but sends them no request, so a handler that answers 500 (a ``...`` body where a
``dict`` is promised) or a route shadowed by an earlier one passed unseen. This test
writes those two blocks to a file, runs ``uvicorn server:app`` in a memory cgroup with a
1 GiB limit (so the page's 80 % share is of a figure the test knows, not of whatever the
machine has in use) and calls each route the page names, the health paths and the
``/metrics`` that deploy/kubernetes scrapes included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from apps.tutorial_server import server_source
from support import start_uvicorn

GiB = 2**30


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
        # step 1's with_metrics: the scrape that deploy/kubernetes points Prometheus at
        scrape = httpx.get(f"{url}/metrics", timeout=10)
        assert scrape.status_code == 200
        assert "resguard_ready 1.0" in scrape.text
        assert 'resguard_guard_admitted_total{guard="api"} 2.0' in scrape.text
