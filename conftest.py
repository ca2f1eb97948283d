"""The documentation's Python code blocks run as tests (Sybil), so a tutorial cannot rot.

Every ```` ```python ```` block in README.md and docs/ runs, in order, in one namespace per
page. A page sets up what its readers need not see in a ``% invisible-code-block: python``
comment, and marks a block that cannot run here with ``% skip: next`` and a reason.
Pages that talk to Ollama get a stand-in server as ``$OLLAMA_HOST``; pages that talk to
Docker need a running engine (they skip with a reason, or fail where integration is
required, as tests/plugins/integration.py does).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from sybil import Sybil
from sybil.parsers.myst import PythonCodeBlockParser, SkipParser
from sybil.sybil import SybilCollection

REQUIRED = os.environ.get("RESGUARD_REQUIRE_INTEGRATION", "") not in ("", "0")


@pytest.fixture
def docs_ollama(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An Ollama stand-in on loopback, as ``$OLLAMA_HOST`` for the page's code."""
    from resguard.testing.ollama import OllamaStandIn

    with OllamaStandIn() as server:
        monkeypatch.setenv("OLLAMA_HOST", server.host)
        yield server.host


@pytest.fixture
def docs_docker() -> None:
    """A reachable Docker engine, or a skip (a failure where integration is required)."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as error:
        reason = f"no Docker engine reachable ({type(error).__name__}); start one"
        if REQUIRED:
            pytest.fail(f"integration required (RESGUARD_REQUIRE_INTEGRATION=1) but {reason}")
        pytest.skip(reason)


def _setup(namespace: dict[str, Any]) -> None:
    namespace["__name__"] = "docs"


def _pages(patterns: list[str], fixtures: list[str], excludes: list[str] = []) -> Sybil:  # noqa: B006
    return Sybil(
        parsers=[PythonCodeBlockParser(), SkipParser()],
        patterns=patterns,
        excludes=excludes,
        setup=_setup,
        fixtures=fixtures,
    )


_OLLAMA_PAGES = ["docs/ollama.md", "docs/tutorials/ml-service-ollama.md"]
_DOCKER_PAGES = ["docs/docker.md", "docs/budgets.md"]

pytest_collect_file = SybilCollection(
    (
        _pages(
            ["README.md", "docs/*.md", "docs/tutorials/*.md"],
            fixtures=[],
            excludes=["docs/changelog.md", *_OLLAMA_PAGES, *_DOCKER_PAGES],
        ),
        _pages(_OLLAMA_PAGES, fixtures=["docs_ollama"]),
        _pages(_DOCKER_PAGES, fixtures=["docs_docker", "docs_ollama"]),
    )
).pytest()
