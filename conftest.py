"""The documentation's Python code blocks run as tests (Sybil), so a tutorial cannot rot.

Every ```` ```python ```` block in README.md and docs/ runs, in order, in one namespace per
page. A page sets up what its readers need not see in a ``% invisible-code-block: python``
comment, and marks a block that cannot run here with ``% skip: next`` and a reason.
Pages that talk to Ollama get a stand-in server as ``$OLLAMA_HOST``; pages that talk to
Docker need a running engine (they skip with a reason, or fail where integration is
required, as tests/plugins/integration.py does).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sybil import Sybil
from sybil.parsers.myst import PythonCodeBlockParser, SkipParser
from sybil.sybil import SybilCollection

# The integration fixtures and the backend's skips (tests/plugins/) serve the tests and the
# pages alike, so they are plugins of the whole run, declared here in the root conftest as
# pytest asks.
sys.path.insert(0, str(Path(__file__).parent / "tests"))
pytest_plugins = [
    "plugins.backends",
    "plugins.integration",
    "plugins.cgroup",
    "plugins.docker",
    "plugins.ollama",
]


@pytest.fixture(scope="module")
def docs_ollama() -> Iterator[str]:
    """An Ollama stand-in on loopback, as ``$OLLAMA_HOST``, for the whole page (Sybil runs a
    page as a module): a client made in one block still talks to it in the next."""
    from resguard.testing.ollama import OffsetClock, OllamaStandIn

    server = OllamaStandIn(clock=OffsetClock()).start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OLLAMA_HOST", server.host)
        try:
            yield str(server.host)
        finally:
            server.stop()


@pytest.fixture
def docs_docker(docker_client: Any) -> Any:
    """A reachable Docker engine with the test image (tests/plugins/docker.py): else a
    skip with the reason, or a failure where integration is required."""
    return docker_client


def _setup(namespace: dict[str, Any]) -> None:
    namespace["__name__"] = "docs"


def _teardown(namespace: dict[str, Any]) -> None:
    """Stop every Monitor a page started (a page reads as a script that ends, and the
    tests after it check that no monitor thread is left)."""
    from resguard import Monitor

    for value in list(namespace.values()):
        if isinstance(value, Monitor):
            value.stop()


def _pages(patterns: list[str], fixtures: list[str], excludes: list[str] = []) -> Sybil:  # noqa: B006
    return Sybil(
        parsers=[PythonCodeBlockParser(), SkipParser()],
        patterns=patterns,
        excludes=excludes,
        setup=_setup,
        teardown=_teardown,
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
