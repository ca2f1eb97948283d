"""The deployed pod, run here: the assistant tutorial's server under the Deployment's command.

deploy/kubernetes runs docs/tutorials/assistant-server.md's ``server.py`` (docs/deploy.md
says so): the app is that page's steps 1 and 3 as written, saved as the module the
container's ``command`` names (uvicorn, its ``server:app``, its port option), with only the
address made loopback and the port a free one. The probes and the scrape are the
manifest's own paths, so what the kubelet and Prometheus would ask a pod is asked of a real
uvicorn over loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from apps.tutorial_server import server_source
from support import start_uvicorn

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "deployment.yaml"


def container() -> dict[str, Any]:
    doc = yaml.safe_load(DEPLOYMENT.read_text())
    found: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    return found


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of the tutorial's server served by the container's command."""
    folder = tmp_path_factory.mktemp("pod")
    command = list(container()["command"])
    module = command[1].partition(":")[0]
    assert module == "server", command  # the tutorial's server.py, not another app
    (folder / f"{module}.py").write_text(server_source())
    assert command[0] == "uvicorn"
    assert "--workers" not in command  # one worker per pod: one registry per scrape target
    # the container's command; start_uvicorn makes its --host loopback and its --port free
    alive = container()["livenessProbe"]["httpGet"]["path"]
    with start_uvicorn(*command[1:], ready=alive, cwd=folder) as server:
        yield server.url


def test_the_probes_and_the_scrape_answer_on_a_calm_pod(pod: str) -> None:
    spec = container()
    ready = httpx.get(pod + spec["readinessProbe"]["httpGet"]["path"], timeout=5)
    alive = httpx.get(pod + spec["livenessProbe"]["httpGet"]["path"], timeout=5)
    assert alive.status_code == 200
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True
    assert body["age_s"] is not None  # the monitor started with the server
    annotations = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["metadata"]
    scrape = httpx.get(pod + annotations["annotations"]["prometheus.io/path"], timeout=5)
    assert scrape.status_code == 200
    for series in (
        "resguard_ready 1.0",
        'resguard_guard_refused_total{guard="api",reason="memory"} 0.0',
    ):
        assert series in scrape.text
