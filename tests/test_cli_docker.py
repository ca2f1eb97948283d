"""``resguard docker stats|limits`` (resguard.cli.docker) against a real Docker engine.

Moved from tests/test_docker.py with the command line into resguard/cli/ (assertions
unchanged)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

docker_sdk = pytest.importorskip("docker")

from resguard.cli.docker import cli  # noqa: E402
from resguard.docker import Containers  # noqa: E402

from plugins.docker import HOLD  # noqa: E402

MiB = 1 << 20


def _unreachable(tmp_path: Any) -> Any:
    """A client for a socket that does not exist (the engine down or never installed)."""
    return docker_sdk.DockerClient(
        base_url=f"unix://{tmp_path}/missing/docker.sock", version="1.41", timeout=5
    )


def test_cli_engine_down_exits_2_with_message_on_stderr(tmp_path: Any) -> None:
    for command in ("stats", "limits"):
        out, err = io.StringIO(), io.StringIO()
        code = cli(
            command,
            as_json=True,
            out=out,
            err=err,
            containers=Containers(_unreachable(tmp_path)),
            cpu_sample_s=0,
        )
        assert code == 2
        assert out.getvalue() == ""
        assert "not reachable" in err.getvalue()
        assert err.getvalue().count("\n") == 1


@pytest.mark.docker
def test_cli_prints_tables_and_json(docker_run: Any, docker_client: Any) -> None:
    container = docker_run(HOLD.format(kib=1024), memory="48m")
    engine = Containers(docker_client)
    out = io.StringIO()
    assert cli("stats", as_json=True, out=out, containers=engine, cpu_sample_s=0.1) == 0
    data = json.loads(out.getvalue())
    row = [item for item in data["items"] if item["id"] == container.id]
    assert row
    assert row[0]["memory_limit"] == 48 * MiB
    assert row[0]["cpu_percent"] is not None
    out = io.StringIO()
    assert cli("stats", as_json=False, out=out, containers=engine, cpu_sample_s=0) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["CONTAINER", "ID", "NAME"]
    assert any(container.name in line and "48.0 MiB" in line for line in lines)
    assert "running" in lines[-1]
    out = io.StringIO()
    assert cli("limits", as_json=False, out=out, containers=engine) == 0
    assert any(
        container.name in line and "48.0 MiB" in line for line in out.getvalue().splitlines()
    )
    out = io.StringIO()
    assert cli("limits", as_json=True, out=out, containers=engine) == 0
    assert container.id in [item["id"] for item in json.loads(out.getvalue())]
    engine.close()


@pytest.mark.docker
def test_resguard_docker_limits_through_the_command_line(
    docker_run: Any, docker_client: Any
) -> None:
    from resguard.cli import main

    container = docker_run(HOLD.format(kib=64), memory="32m")
    out = io.StringIO()
    assert main(["docker", "limits", "--json"], out=out) == 0
    (row,) = [item for item in json.loads(out.getvalue()) if item["id"] == container.id]
    assert row["memory_limit"] == 32 * MiB
