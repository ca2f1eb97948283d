"""ASGI middleware: refuse requests with 503 + Retry-After under pressure; health paths.

:class:`GuardMiddleware` wraps any ASGI application (FastAPI, Starlette, a bare callable)
without depending on a framework. For each HTTP request it admits through a
:class:`~resguard.Guard`; a refusal answers ``503 Service Unavailable`` with a
``Retry-After`` header and a small JSON body, without calling the application. The ASGI
lifespan starts and stops the Monitor.

Two kinds of health paths, for a Kubernetes probe or a load balancer:

- **readiness** (default ``/readyz``) answers 503 with ``Retry-After`` while the Monitor's
  verdict is CRITICAL, so traffic goes elsewhere while this replica sheds load; its JSON
  says why: the level, each breaching rule with its figure, value and threshold, the age
  of the state it judged and what is unknown.
- **liveness** (default ``/livez`` and ``/healthz``) answers 200 whatever the pressure. A
  liveness probe that failed under pressure would get a replica restarted exactly while it
  was shedding load correctly: the restart drops the requests in flight, the warm caches
  and models, and moves the load onto the others. The application's own handler for such
  a path wins; the middleware answers when the application has none (it answers 404).

When the verdict cannot be known (the Monitor's state is stale, or a rule could not judge
because a source is damaged), readiness says so in an ``"unknown"`` field with the reason
and follows the guard's ``on_unknown``: ``"admit"`` stays ready (the guard still admits,
so taking the pod out of rotation would only move the load), ``"refuse"`` answers 503
(the guard refuses everything guarded, so traffic belongs elsewhere).

::

    from fastapi import FastAPI
    from resguard.asgi import GuardMiddleware

    app = FastAPI()
    app.add_middleware(GuardMiddleware, reserve="64MiB", wait="2s")
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from resguard._errors import (
    ConfigError,
    InvalidType,
    InvalidValue,
    ResguardError,
    ResourceExhausted,
)
from resguard._modules.paths import below_root
from resguard._modules.render import printable
from resguard.guard import (
    Admission,
    Guard,
    OnUnknown,
    Reserve,
    check_duration,
    check_reserve,
    state_unknown,
)
from resguard.monitor import Monitor
from resguard.rules import Breach, Level, Verdict
from resguard.units import shown

__all__ = ["DEFAULT_EXCLUDE", "DEFAULT_LIVENESS", "GuardMiddleware", "retry_after_header"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths that never go through the guard: liveness probes (refusing one would get the pod
#: restarted, the opposite of shedding load) and metrics scrapes.
DEFAULT_EXCLUDE: tuple[str, ...] = ("/healthz", "/livez", "/metrics")

#: Paths answering liveness (200 whatever the pressure) unless the application serves them.
DEFAULT_LIVENESS: tuple[str, ...] = ("/livez", "/healthz")

#: While a request queues for admission, the middleware reads its body to notice the client
#: leaving (``http.disconnect``) and replays it to the app; it stops reading beyond this.
WATCH_BODY_BYTES = 64 * 1024
_WATCH_MESSAGES = 64

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")


class GuardMiddleware:
    """Admit each HTTP request through a guard; answer 503 + Retry-After when refused.

    Arguments:
        app: the ASGI application to protect.
        guard: the guard to admit through (default ``Guard(memory="90%", monitor=monitor)``).
        monitor: the Monitor whose verdict the readiness path reports (default: the guard's
            monitor, or a new ``Monitor()`` when no guard is given).
        exclude: paths that skip the guard: exact (``"/healthz"``) or, ending in ``*``, a
            prefix (``"/static/*"``). Default :data:`DEFAULT_EXCLUDE`.
        readiness_path: the path answering readiness (``None`` turns it off).
        liveness_paths: the paths answering liveness, never through the guard (``()`` or
            ``None`` turns them off). Default :data:`DEFAULT_LIVENESS`.
        start_monitor: start the Monitor on ``lifespan.startup`` (or at the first request
            when the server runs without lifespan) and stop it on ``lifespan.shutdown``. A
            monitor that is already running is left alone.
        reserve: the reservation per request (bytes, ``"64MiB"``, ``"auto"``; default the
            guard's).
        wait: how long a request may queue for admission (default the guard's).
        unready_level: readiness answers 503 at and above this verdict level.
    """

    def __init__(
        self,
        app: ASGIApp,
        guard: Guard | None = None,
        *,
        monitor: Monitor | None = None,
        exclude: Iterable[str] = DEFAULT_EXCLUDE,
        readiness_path: str | None = "/readyz",
        liveness_paths: Iterable[str] | None = DEFAULT_LIVENESS,
        start_monitor: bool = True,
        reserve: Reserve = None,
        wait: float | str | None = None,
        unready_level: Level = Level.CRITICAL,
    ) -> None:
        _check_types(app, guard, monitor, unready_level, start_monitor)
        exact, prefixes = _parse_exclude(exclude)
        readiness = (
            _check_path(readiness_path, "readiness_path") if readiness_path is not None else None
        )
        liveness = _parse_liveness(liveness_paths)
        _check_apart(readiness, liveness)
        # parsed once here, not per request (an invalid value fails at startup)
        parsed_reserve: Reserve = None
        if reserve is not None:
            auto = isinstance(reserve, str) and reserve == "auto"
            parsed_reserve = "auto" if auto else check_reserve(reserve)
        wait_s = check_duration(wait, "wait") if wait is not None else None
        if guard is None:
            monitor = monitor if monitor is not None else Monitor()
            guard = Guard(memory="90%", monitor=monitor)
        elif monitor is None:
            monitor = guard.monitor
        self.app = app
        self.guard = guard
        self.monitor = monitor
        self.readiness_path = readiness
        self.liveness_paths = liveness
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)
        self.start_monitor = start_monitor
        self.unready_level = unready_level
        self._reserve = parsed_reserve
        self._wait_s = wait_s
        # a request that never waits, with the guard's own reservation and no in-flight
        # watch, can take the guard's synchronous hot path (about 3x cheaper than admit())
        may_wait = (self._wait_s if self._wait_s is not None else guard.wait_s) > 0
        self._plain = (
            self._reserve is None
            and not guard.auto_reserve
            and guard.on_breach is None
            and not may_wait
        )
        # a request that may queue is watched for its client leaving (not with on_breach,
        # whose own task group must stay innermost)
        self._watch = may_wait and guard.on_breach is None
        self._clock = guard.clock  # a request's hold time, on the guard's clock
        self._monitor_ready = not start_monitor or monitor is None
        self._owns_monitor = False
        self._start_lock = threading.Lock()

    # -- dispatch ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = below_root(scope["path"], scope.get("root_path"))
            if path == self.readiness_path:
                await self._readiness(scope, send)
            elif path in self.liveness_paths:
                await self._liveness(scope, receive, send)
            elif path in self._exact or (self._prefixes and path.startswith(self._prefixes)):
                await self.app(scope, receive, send)
            else:
                await self._guarded(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:  # websocket and anything newer pass through
            await self.app(scope, receive, send)

    def excluded(self, path: str) -> bool:
        """Whether requests for *path* skip the guard."""
        return path in self._exact or (bool(self._prefixes) and path.startswith(self._prefixes))

    # -- requests ---------------------------------------------------------------------------

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._monitor_ready:  # a server running without lifespan
            self._start_lazily()
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        guard = self.guard
        try:
            # both paths release the reservation on every exit: a return, an exception, a
            # cancellation when the client goes away
            if self._plain:  # the guard's own no-I/O hot path; it cannot block here
                reserved = guard.acquire()
                started_s = self._clock()
                try:
                    await self.app(scope, receive, tracking_send)
                finally:
                    guard.release(reserved, self._clock() - started_s)
            else:
                admission = guard.admit(self._reserve, self._wait_s)
                if self._watch and not self._admits_now(admission):
                    # it will queue: notice a client that leaves while it waits
                    async with contextlib.AsyncExitStack() as stack:
                        replay = await self._enter_watching(stack, admission, receive)
                        if replay is None:
                            return  # the client left while queued: nobody to answer
                        await self.app(scope, replay, tracking_send)
                else:
                    async with admission:
                        await self.app(scope, receive, tracking_send)
        except ResourceExhausted as error:
            # refused at the door, or by a guard inside the app (a guarded model call)
            # before it answered: either way the client should come back later
            if started:
                raise
            await self._refuse(send, error)

    def _admits_now(self, admission: Admission) -> bool:
        """Whether *admission* would get in at once (nobody queued, room enough), so that
        watching for a hang-up (a task per request) is only paid by requests that wait.
        No await separates this from the admission, so on one event loop it cannot be
        overtaken; a thread that takes the room in between only costs the watch."""
        return self.guard.would_admit(admission.reserve_bytes)

    async def _enter_watching(
        self, stack: contextlib.AsyncExitStack[bool | None], admission: Admission, receive: Receive
    ) -> Receive | None:
        """Enter *admission* (left with *stack*) while reading the request for
        ``http.disconnect``; return the receive to hand the app (replaying what was read),
        or None if the client left."""
        import anyio

        buffered: list[Message] = []
        left = entered = False
        refusal: ResourceExhausted | None = None

        async def watch(scope: anyio.CancelScope) -> None:
            nonlocal left
            read_bytes = 0
            body_done = False
            # never buffer a large upload; after the whole body only a disconnect may come
            # (a server that keeps answering otherwise is not watched further)
            while read_bytes <= WATCH_BODY_BYTES and len(buffered) < _WATCH_MESSAGES:
                message = await receive()
                buffered.append(message)
                if message["type"] == "http.disconnect":
                    left = True
                    scope.cancel()  # stop queueing for a client that is gone
                    return
                if body_done:
                    return
                read_bytes += len(message.get("body", b""))
                body_done = not message.get("more_body", False)

        async with anyio.create_task_group() as group:
            group.start_soon(watch, group.cancel_scope)
            try:
                await stack.enter_async_context(admission)
                entered = True
            except ResourceExhausted as error:
                refusal = error
            finally:
                group.cancel_scope.cancel()  # stop watching (receive() is cancel-safe)
        if refusal is not None:
            raise refusal
        if left or not entered:
            return None  # (admitted in the same instant the client left: the stack leaves)
        if not buffered:
            return receive

        async def replay() -> Message:
            if buffered:
                return buffered.pop(0)
            return await receive()

        return replay

    async def _refuse(self, send: Send, error: ResourceExhausted) -> None:
        try:
            seconds = retry_after_header(error.retry_after)
        except ResguardError:  # raised by hand in the app, with no number: still a 503
            seconds = 1
        body = json.dumps(
            {"error": "overloaded", "reason": str(error.reason), "retry_after": seconds}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    _JSON,
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(seconds).encode()),
                    _NO_STORE,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _readiness(self, scope: Scope, send: Send) -> None:
        if not self._monitor_ready:
            self._start_lazily()
        answer = self.readiness()
        headers = [_JSON, _NO_STORE]
        if answer["ready"]:
            status = 200
        else:
            status = 503
            seconds = retry_after_header(self.guard.retry_after_s)
            headers.append((b"retry-after", str(seconds).encode()))
        await _answer_json(scope, send, status, answer, headers)

    async def _liveness(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The application's answer for a liveness path, or 200 when it has none (404)."""
        missing = False

        async def unless_missing(message: Message) -> None:
            nonlocal missing
            if message["type"] == "http.response.start" and message.get("status") == 404:
                missing = True
            if not missing:
                await send(message)

        await self.app(scope, receive, unless_missing)
        if missing:
            await _answer_json(scope, send, 200, {"status": "alive"}, [_JSON, _NO_STORE])

    def readiness(self) -> dict[str, Any]:
        """What the readiness path answers: ``status`` (``"ready"`` or ``"unready"``) and
        ``ready`` (the same as a bool), ``level`` (the verdict's, ``None`` without a fresh
        one), ``reason`` when unready, ``breaches`` (each breaching rule with its
        ``metric``, ``op``, ``value``, ``threshold``, ``unit``, ``level``, ``held_s`` and
        ``culprits``), ``age_s`` (how old the judged state is; ``None`` before the first
        sample) and ``unknown`` when something could not be known.

        Unready while the verdict is at or above *unready_level*. Without a Monitor, or
        while its state is stale, the guard decides: unready while it is over its RSS or
        memory share (``level`` is then ``None``). What cannot be known is named in
        ``"unknown"``; the guard's ``on_unknown`` then decides between ready (``"admit"``)
        and unready (``"refuse"``).
        """
        answer = _readiness_of(self.guard, self.monitor, self.unready_level)
        ready = answer.pop("status") == "ready"
        return {"status": "ready" if ready else "unready", "ready": ready, **answer}

    # -- the monitor's life -----------------------------------------------------------------

    def _start_lazily(self) -> None:
        with self._start_lock:
            if self._monitor_ready:
                return
            self._start_monitor_sync()

    def _start_monitor_sync(self) -> None:
        monitor = self.monitor
        self._monitor_ready = True
        if not self.start_monitor or monitor is None or self._owns_monitor:
            return
        if monitor.running:  # started by its owner: theirs to stop
            return
        monitor.start()
        self._owns_monitor = True

    async def _start_monitor(self) -> None:
        import anyio

        with self._start_lock:
            if self._owns_monitor:
                return
            self._monitor_ready = True
        await anyio.to_thread.run_sync(self._start_monitor_sync)

    async def _stop_monitor(self) -> None:
        import anyio

        if self._owns_monitor and self.monitor is not None:
            self._owns_monitor = False
            await anyio.to_thread.run_sync(self.monitor.stop)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        asked = False  # the app received lifespan.startup: it speaks the lifespan protocol

        async def watched_receive() -> Message:
            nonlocal asked
            message = await receive()
            if message["type"] == "lifespan.startup":
                asked = True
                await self._start_monitor()  # before the app's own startup code runs
            return message

        async def watched_send(message: Message) -> None:
            if message["type"] in (
                "lifespan.startup.failed",
                "lifespan.shutdown.complete",
                "lifespan.shutdown.failed",
            ):
                await self._stop_monitor()  # after the app's own shutdown code ran
            await send(message)

        try:
            await self.app(scope, watched_receive, watched_send)
        except Exception:
            if asked:
                await self._stop_monitor()
                raise
            # The app does not support lifespan (it raised at the unknown scope type):
            # answer the protocol for it, so the monitor still starts and stops.
            await self._serve_lifespan(receive, send)
            return
        except BaseException:
            await self._stop_monitor()
            raise
        if not asked:  # the app returned at once: it ignores lifespan; so do not we
            await self._serve_lifespan(receive, send)
            return
        await self._stop_monitor()

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        try:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        await self._start_monitor()
                    except Exception as error:
                        await send({"type": "lifespan.startup.failed", "message": str(error)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self._stop_monitor()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        finally:
            await self._stop_monitor()


def _readiness_of(guard: Guard, monitor: Monitor | None, unready_level: Level) -> dict[str, Any]:
    """Everything readiness judges, read once here, then :func:`readiness_answer`."""
    verdict: Verdict | None = None
    unknown: str | None = None
    age_s: float | None = None
    if monitor is not None:
        state = monitor.state
        now_s = guard.clock()
        stale, unknown = state_unknown(monitor, state, now_s)
        if state.sequence:
            age_s = round(max(now_s - state.snapshot.monotonic, 0.0), 3)
        if not stale:
            verdict = state.verdict
    guard_breach, over_share, numbers_unknown = None, False, None
    if verdict is None:  # no fresh verdict: the guard's own reading (it may sample)
        breach = guard.breach()
        guard_breach = None if breach is None else str(breach)
        over_share = guard.headroom_bytes() < 0
        numbers_unknown = guard.unknown_reason(verdict=False)
    return readiness_answer(
        verdict,
        age_s=age_s,
        unknown=unknown,
        unready_level=unready_level,
        on_unknown=guard.on_unknown,
        guard_breach=guard_breach,
        over_share=over_share,
        numbers_unknown=numbers_unknown,
    )


def readiness_answer(
    verdict: Verdict | None,
    *,
    age_s: float | None,
    unknown: str | None,
    unready_level: Level,
    on_unknown: OnUnknown,
    guard_breach: str | None = None,
    over_share: bool = False,
    numbers_unknown: str | None = None,
) -> dict[str, Any]:
    """Readiness (before ``ready`` is added, see :meth:`GuardMiddleware.readiness`) from
    values read once: a decision with no clock, no Monitor and no sampling of its own.

    *verdict* is the Monitor's fresh verdict, or ``None`` (no Monitor, no sample yet, a
    stale state); *age_s* the judged state's age and *unknown* why it cannot be trusted.
    Without a verdict the guard's own reading decides: *guard_breach* (why running work
    should stop), *over_share* (no headroom left) and *numbers_unknown* (what numbers it
    could not read); they are not looked at while there is a verdict.
    """
    answer: dict[str, Any]
    breaches: list[dict[str, Any]] = []
    if verdict is not None:
        answer = {"level": verdict.level.name}
        breaches = [_breach(breach) for breach in verdict.breaches]
        if verdict.level >= unready_level:  # a known breach is a breach
            answer.update(status="unready", reason=verdict.reason)
        else:
            answer.update(_unknown_answer(on_unknown, unknown))
    elif guard_breach is not None:
        answer = {"level": None, "status": "unready", "reason": guard_breach}
    elif over_share:
        answer = {"level": None, "status": "unready", "reason": "over the memory share"}
    else:
        if numbers_unknown is not None:
            unknown = numbers_unknown if unknown is None else f"{unknown}; {numbers_unknown}"
        answer = {"level": None, **_unknown_answer(on_unknown, unknown)}
    answer.update(breaches=breaches, age_s=age_s)
    if unknown is not None:
        answer["unknown"] = unknown
    return answer


def _unknown_answer(on_unknown: OnUnknown, unknown: str | None) -> dict[str, Any]:
    """Ready, or by *on_unknown* not while *unknown* (when not ``None``) cannot be known."""
    if unknown is None:
        return {"status": "ready"}
    if on_unknown == "refuse":
        reason = unknown if unknown.startswith("unknown: ") else f"unknown: {unknown}"
        return {"status": "unready", "reason": reason}
    return {"status": "ready"}


async def _answer_json(
    scope: Scope,
    send: Send,
    status: int,
    answer: dict[str, Any],
    headers: list[tuple[bytes, bytes]],
) -> None:
    """Answer *answer* as JSON (no body for HEAD)."""
    body = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send(
        {"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body}
    )


def _number(value: float) -> float | None:
    """*value* for JSON: ``None`` for NaN or an infinity (no JSON number), else as is."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _breach(breach: Breach) -> dict[str, Any]:
    """One breaching rule as readiness lists it."""
    return {
        "rule": printable(breach.rule),
        "metric": breach.metric,
        "op": breach.op,
        "value": _number(breach.value),
        "threshold": _number(breach.threshold),
        "unit": breach.unit,
        "level": breach.level.name,
        "held_s": _number(round(breach.held_s, 3)),
        "culprits": [offender.label for offender in breach.offenders],
    }


def retry_after_header(retry_after_s: float) -> int:
    """Whole seconds for a ``Retry-After`` header: rounded up, at least 1."""
    if isinstance(retry_after_s, bool) or not isinstance(retry_after_s, (int, float)):
        raise InvalidType(
            f"retry_after_s={shown(retry_after_s)} is not a number of seconds; expected e.g. 1.5"
        )
    if isinstance(retry_after_s, float) and not math.isfinite(retry_after_s):
        return 1
    if retry_after_s <= 1:
        return 1
    return math.ceil(retry_after_s)  # exact for any int, 10**400 included


def _check_types(
    app: object, guard: object, monitor: object, unready_level: object, start_monitor: object
) -> None:
    if not callable(app):
        raise InvalidType(f"app={shown(app)} is not an ASGI application (a callable)")
    if guard is not None and not isinstance(guard, Guard):
        raise InvalidType(f"guard={shown(guard)} is not a resguard.Guard")
    if monitor is not None and not isinstance(monitor, Monitor):
        raise InvalidType(f"monitor={shown(monitor)} is not a resguard.Monitor")
    if not isinstance(unready_level, Level):
        raise InvalidType(
            f"unready_level={shown(unready_level)} is not a resguard.Level; "
            f"expected e.g. Level.CRITICAL"
        )
    if not isinstance(start_monitor, bool):
        raise InvalidType(
            f"start_monitor={shown(start_monitor)} is not a bool; expected True or False"
        )


def _parse_exclude(exclude: Iterable[str]) -> tuple[list[str], list[str]]:
    """The exact paths and the prefixes (given ending in ``*``) of *exclude*."""
    if isinstance(exclude, str):
        exclude = (exclude,)
    try:
        entries = list(exclude)
    except TypeError:
        raise InvalidType(
            f"exclude={shown(exclude)} is not a list of paths; "
            f"expected e.g. ('/healthz', '/static/*')"
        ) from None
    exact, prefixes = [], []
    for entry in entries:
        path = _check_path(entry, "exclude")
        if path.endswith("*"):
            prefixes.append(path[:-1])
        else:
            exact.append(path)
    return exact, prefixes


def _parse_liveness(paths: Iterable[str] | None) -> frozenset[str]:
    """The liveness paths, each checked like ``readiness_path``."""
    if paths is None:
        return frozenset()
    if isinstance(paths, str):
        paths = (paths,)
    try:
        entries = list(paths)
    except TypeError:
        raise InvalidType(
            f"liveness_paths={shown(paths)} is not a list of paths; "
            f"expected e.g. ('/livez', '/healthz')"
        ) from None
    return frozenset(_check_path(entry, "liveness_paths") for entry in entries)


def _check_apart(readiness: str | None, liveness: frozenset[str]) -> None:
    """Refuse a readiness path that is (or is below) a liveness path: that path would then
    answer 503 under pressure, and the orchestrator restart the replica for it."""
    if readiness is None:
        return
    for live in sorted(liveness):
        if readiness == live or readiness.startswith(live.rstrip("/") + "/"):
            where = "is" if readiness == live else "is below"
            raise ConfigError(
                f"readiness_path={shown(readiness)} {where} the liveness path {shown(live)} "
                f"(liveness_paths={shown(tuple(sorted(liveness)))}): a liveness path answers "
                f"200 whatever the pressure; give readiness its own path (e.g. '/readyz') "
                f"or leave that one out of liveness_paths",
                key="readiness_path",
                value=readiness,
            )


def _check_path(path: object, what: str) -> str:
    if not isinstance(path, str):
        raise InvalidType(
            f"{what}={shown(path)} is not a string; expected a URL path starting "
            f"with '/', e.g. '/healthz' (or '/static/*' for a prefix)"
        )
    if not path.startswith("/"):
        raise InvalidValue(
            f"{what}={shown(path)} must be a URL path starting with '/', "
            f"e.g. '/healthz' (or '/static/*' for a prefix)"
        )
    return path
