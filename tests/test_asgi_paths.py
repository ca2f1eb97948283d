"""GuardMiddleware's readiness path is never a liveness path (issue 16, round 2, R1 #10):
``readiness_path="/livez"`` was accepted, and /livez answered 503 under pressure."""

from __future__ import annotations

import pytest

from resguard import ConfigError, Guard
from resguard.asgi import GuardMiddleware
from resguard.testing import StaticMonitor


async def app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("never called")


def guard() -> Guard:
    return Guard(memory="90%", monitor=StaticMonitor(memory_percent=40))


@pytest.mark.parametrize(
    ("readiness", "liveness", "where"),
    [
        ("/livez", None, "is the liveness path '/livez'"),
        ("/healthz", None, "is the liveness path '/healthz'"),
        ("/live/ready", ("/live",), "is below the liveness path '/live'"),
        ("/live/ready", ("/live/",), "is below the liveness path '/live/'"),
        ("/z", ("/a", "/z"), "is the liveness path '/z'"),
    ],
)
def test_a_readiness_path_that_is_or_is_below_a_liveness_path_is_refused_quoting_both(
    readiness: str, liveness: tuple[str, ...] | None, where: str
) -> None:
    kwargs = {} if liveness is None else {"liveness_paths": liveness}
    with pytest.raises(ConfigError) as info:
        GuardMiddleware(app, guard(), readiness_path=readiness, start_monitor=False, **kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(f"readiness_path='{readiness}' {where} (liveness_paths=")
    assert info.value.key == "readiness_path"
    assert info.value.value == readiness


@pytest.mark.parametrize(
    ("readiness", "liveness"),
    [("/readyz", None), ("/livezz", None), ("/livez", ()), (None, None), ("/lives", ("/live",))],
)
def test_readiness_beside_liveness_is_accepted(
    readiness: str | None, liveness: tuple[str, ...] | None
) -> None:
    kwargs = {} if liveness is None else {"liveness_paths": liveness}
    middleware = GuardMiddleware(
        app,
        guard(),
        readiness_path=readiness,
        start_monitor=False,
        **kwargs,  # type: ignore[arg-type]
    )
    assert middleware.readiness_path == readiness
