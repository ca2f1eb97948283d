"""Admission: one call through a guard with its own reservation, wait and breach watch."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from resguard._errors import InvalidState, InvalidType, ResourceExhausted
from resguard._modules.log import emit, get_logger
from resguard.guard import _guard
from resguard.guard._args import OnBreach, Reserve, check_duration, check_on_breach, check_reserve
from resguard.units import shown

__all__ = ["Admission"]

_logger = get_logger("resguard")


class Admission:
    """One admission through a guard (from :meth:`Guard.admit`); ``with`` or ``async with``.

    It may be entered once at a time; its reservation is released on every way out of the
    block (a return, an exception, a cancellation, a breach).
    """

    __slots__ = (
        "_auto",
        "_entered",
        "_guard",
        "_key",
        "_on_breach",
        "_reserve",
        "_rss_before",
        "_started",
        "_task_group",
        "_wait_s",
        "breached",
        "reserved",
    )

    def __init__(
        self,
        guard: _guard.Guard,
        reserve: Reserve,
        wait: float | str | None,
        on_breach: OnBreach,
        key: str | None,
    ) -> None:
        if not isinstance(guard, _guard.Guard):
            raise InvalidType(f"guard={shown(guard)} is not a resguard.Guard")
        if key is not None and not isinstance(key, str):
            raise InvalidType(f"key={shown(key)} is not a string")
        check_on_breach(on_breach)
        auto = (isinstance(reserve, str) and reserve == "auto") or (
            reserve is None and guard.auto_reserve
        )
        self._key = key or ""
        if auto:
            reserve_bytes = guard.learned_reserve_bytes(self._key)
        elif reserve is None:
            reserve_bytes = guard.reserve_bytes
        else:
            reserve_bytes = check_reserve(reserve)
        self._wait_s = check_duration(wait, "wait") if wait is not None else None
        self._guard = guard
        self._auto = auto
        self._reserve = reserve_bytes
        self._on_breach = on_breach
        self._started = 0.0
        self._rss_before: int | None = None
        self._task_group: Any = None
        self._entered = False
        self.reserved = 0
        self.breached: ResourceExhausted | None = None

    @property
    def reserve_bytes(self) -> int:
        """The reservation this admission asks for (learned, given or the guard's)."""
        return self._reserve

    def _claim(self) -> None:
        if self._entered:
            raise InvalidState(
                "this admission is already entered; call guard.admit() again for another block"
            )
        self._entered = True
        self.breached = None

    def _begin(self) -> None:
        self._started = self._guard.clock()
        if self._auto:
            self._rss_before = self._guard._rss_now()

    def _end(self) -> None:
        guard = self._guard
        try:
            if self._auto and self._rss_before is not None:
                rss_after = guard._rss_now()
                if rss_after is not None:
                    guard._learn(self._key, max(rss_after - self._rss_before, 0))
        finally:
            self._entered = False
            guard.release(self.reserved, max(guard.clock() - self._started, 0.0))

    def __enter__(self) -> Admission:
        self._claim()
        try:
            self.reserved = self._guard.acquire(self._reserve, self._wait_s)
        except BaseException:
            self._entered = False
            raise
        self._begin()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end()

    async def __aenter__(self) -> Admission:
        self._claim()
        try:
            self.reserved = await self._guard.acquire_async(self._reserve, self._wait_s)
        except BaseException:
            self._entered = False
            raise
        self._begin()
        if self._on_breach == "cancel":
            import anyio

            try:
                self._task_group = anyio.create_task_group()
                await self._task_group.__aenter__()
                self._task_group.start_soon(self._watch)
            except BaseException:
                self._task_group = None
                self._end()
                raise
        return self

    async def _watch(self) -> None:
        import anyio

        guard = self._guard
        while True:
            try:
                breach = guard.breach()
            except Exception as error:  # a failing sample must not fail the block
                emit(
                    _logger, logging.DEBUG, "%s could not check for a breach: %s", guard.name, error
                )
                breach = None
            if breach is not None:
                self.breached = breach
                self._task_group.cancel_scope.cancel()
                return
            await anyio.sleep(guard._poll_s())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        group, self._task_group = self._task_group, None
        swallowed = False
        try:
            if group is not None:
                import anyio

                group.cancel_scope.cancel()
                if exc is None or isinstance(exc, anyio.get_cancelled_exc_class()):
                    # a cancellation is the group's own (a breach) or comes from outside:
                    # the group's scope decides which, and swallows only its own
                    swallowed = bool(await group.__aexit__(exc_type, exc, tb))
                else:
                    # the block raised: stop the watch without handing it the error, which
                    # would come out wrapped in an ExceptionGroup instead of as it was
                    await group.__aexit__(None, None, None)
        finally:
            self._end()
        # a breach replaces only the cancellation it caused (or a block that ended anyway);
        # the block's own exceptions and a cancellation from outside come out unchanged
        if self.breached is not None and (exc is None or swallowed):
            raise self._counted(self.breached)
        return None

    def _counted(self, breach: ResourceExhausted) -> ResourceExhausted:
        """*breach*, counted among the guard's refusals (reason ``"rss"`` or ``"level"``)."""
        return self._guard._count_refusal(breach)
