"""``resguard ollama ps|unload`` (resguard.cli.ollama) against the stand-in server.

Moved from tests/test_ollama.py with the command line into resguard/cli/ (assertions
unchanged)."""

from __future__ import annotations

import io
import json
from typing import Any

import ollama
import pytest

from resguard.cli.ollama import cli
from resguard.testing.ollama import CatalogueModel, OllamaStandIn

from support import free_port

SMALL = "llama3.2:1b"


def test_cli_ps_and_unload(ollama_server: OllamaStandIn) -> None:
    ollama.Client(host=ollama_server.host).generate(model=SMALL)
    out = io.StringIO()
    assert cli("ps", [], host=ollama_server.host, as_json=False, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "PROCESSOR", "UNTIL", "IDLE"]
    assert lines[1].startswith(SMALL)
    assert "100% CPU" in lines[1]

    out = io.StringIO()
    assert cli("ps", [], host=ollama_server.host, as_json=True, out=out) == 0
    payload = json.loads(out.getvalue())
    assert payload["models"][0]["name"] == SMALL
    assert payload["models"][0]["size"] == 1_514_584_145

    out = io.StringIO()
    assert cli("unload", [SMALL], host=ollama_server.host, as_json=True, out=out) == 0
    assert json.loads(out.getvalue())["unloaded"] == [{"name": SMALL, "freed_bytes": 1_514_584_145}]
    assert ollama_server.loaded_names() == []

    err = io.StringIO()
    assert cli("unload", [], host=ollama_server.host, as_json=False, out=out, err=err) == 2
    assert cli("stop", [], host=ollama_server.host, as_json=False, out=out, err=err) == 2
    down = f"http://127.0.0.1:{free_port()}"
    assert cli("ps", [], host=down, as_json=False, out=out, err=err) == 2  # unreachable
    assert (
        cli(
            "unload", ["no-such-model:1b"], host=ollama_server.host, as_json=False, out=out, err=err
        )
        == 1
    )  # Ollama answered: unknown model
    assert "cannot reach Ollama" in err.getvalue()


@pytest.mark.parametrize("host", ["http://127.0.0.1:99999", "nonsense::host"])
def test_cli_with_a_bad_host_prints_one_line_and_exits_2(host: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert cli("ps", [], host=host, as_json=False, out=out, err=err) == 2
    assert out.getvalue() == ""
    assert err.getvalue().count("\n") == 1
    assert repr(host) in err.getvalue()
    assert "Traceback" not in err.getvalue()


def test_resguard_ollama_ps_and_unload_through_the_command_line(
    ollama_server: OllamaStandIn,
) -> None:
    from resguard.cli import main

    ollama.Client(host=ollama_server.host).generate(model=SMALL)
    out = io.StringIO()
    assert main(["ollama", "ps", "--host", ollama_server.host, "--json"], out=out) == 0
    assert [model["name"] for model in json.loads(out.getvalue())["models"]] == [SMALL]
    out = io.StringIO()
    assert main(["ollama", "unload", SMALL, "--host", ollama_server.host], out=out) == 0
    assert out.getvalue() == f"unloaded {SMALL} (1.4 GiB)\n"
    assert ollama_server.loaded_names() == []


def test_ps_shows_the_cpu_gpu_split_as_ollama_ps_prints_it(ollama_server_factory: Any) -> None:
    gb = 10**9
    server = ollama_server_factory(
        catalogue=[
            CatalogueModel("split:1b", gb, 1000 * 10**6, vram_bytes=520 * 10**6),
            CatalogueModel("gpu:1b", gb, 1000 * 10**6, vram_bytes=1000 * 10**6),
        ]
    )
    client = ollama.Client(host=server.host)
    client.generate(model="split:1b")
    client.generate(model="gpu:1b")
    out = io.StringIO()
    assert cli("ps", [], host=server.host, as_json=False, out=out) == 0
    rows = {line.split()[0]: line for line in out.getvalue().splitlines()[1:]}
    assert "48%/52% CPU/GPU" in rows["split:1b"]
    assert "100% GPU" in rows["gpu:1b"]

    out = io.StringIO()
    assert cli("ps", [], host=server.host, as_json=True, out=out) == 0
    models = {m["name"]: m for m in json.loads(out.getvalue())["models"]}
    assert models["split:1b"]["size_vram"] == 520 * 10**6
    assert models["split:1b"]["processor"] == "48%/52% CPU/GPU"
    assert models["split:1b"]["gpu_percent"] == pytest.approx(52.0)
    assert models["gpu:1b"]["processor"] == "100% GPU"


def test_the_standin_command_reports_the_vram_share_asked_for() -> None:
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-m", "resguard.testing.ollama", "--port", "0", "--vram-percent", "52"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        host = process.stdout.readline().split()[4]
        client = ollama.Client(host=host)
        client.generate(model=SMALL)
        (model,) = client.ps().models
        assert model.size_vram == round(1_514_584_145 * 0.52)
        out = io.StringIO()
        assert cli("ps", [], host=host, as_json=False, out=out) == 0
        assert "48%/52% CPU/GPU" in out.getvalue()
    finally:
        process.terminate()
        process.wait(timeout=10)
