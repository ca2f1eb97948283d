"""Paths below a root path (uvicorn --root-path) are matched one way by GuardMiddleware and
with_metrics: ``/api/x`` under ``/api`` is ``/x``; ``/apiary`` is not below ``/api``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from resguard import Guard
from resguard._modules.paths import below_root
from resguard.asgi import GuardMiddleware
from resguard.prometheus import ResguardCollector, with_metrics

from support import asgi_get, hello_app


def test_a_path_is_below_a_root_only_at_a_slash() -> None:
    assert below_root("/api/readyz", "/api") == "/readyz"
    assert below_root("/api", "/api") == ""
    assert below_root("/apiary", "/api") == "/apiary"  # text prefix, not a parent path
    assert below_root("/apiary/readyz", "/api") == "/apiary/readyz"
    assert below_root("/api/readyz", "/api/") == "/readyz"
    assert below_root("/readyz", "") == "/readyz"
    assert below_root("/readyz", None) == "/readyz"
    assert below_root("/readyz", "/") == "/readyz"


segments = st.text(alphabet="abz-", min_size=1, max_size=4)


@given(root=st.lists(segments, min_size=1, max_size=3), rest=st.lists(segments, max_size=3))
def test_what_is_below_a_root_comes_back_with_the_root_put_back(
    root: list[str], rest: list[str]
) -> None:
    root_path = "/" + "/".join(root)
    path = root_path + "".join("/" + part for part in rest)
    stripped = below_root(path, root_path)
    assert root_path + stripped == path
    assert stripped == "" or stripped.startswith("/")
    # a path that only begins with the root's text is left whole
    sibling = root_path + "x" + stripped
    assert below_root(sibling, root_path) == sibling


def test_the_middleware_does_not_take_apiary_for_a_path_below_api() -> None:
    guard = Guard(name="api")
    middleware = GuardMiddleware(hello_app, guard, exclude=("/apiary",), start_monitor=False)
    # /apiary is no path below /api: it is matched whole, and excluded
    assert asgi_get(middleware, "/apiary", root_path="/api").text == "hello /apiary"
    assert guard.stats().admitted == 0
    # below the root, its paths are matched without it
    assert asgi_get(middleware, "/api/apiary", root_path="/api").status_code == 200
    assert guard.stats().admitted == 0
    assert asgi_get(middleware, "/api/work", root_path="/api").status_code == 200
    assert guard.stats().admitted == 1


def test_with_metrics_does_not_take_apiary_for_a_path_below_api() -> None:
    app = with_metrics(hello_app, ResguardCollector(guards=[]), path="/apiary")
    assert "resguard_" in asgi_get(app, "/apiary", root_path="/api").text
    assert "resguard_" in asgi_get(app, "/api/apiary", root_path="/api").text
    assert asgi_get(app, "/api/apiary/x", root_path="/api").text == "hello /api/apiary/x"
