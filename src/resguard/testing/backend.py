"""Run a test on one sensing backend: :func:`use_backend`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from resguard._probes import backend as _backend

__all__ = ["use_backend"]


@contextlib.contextmanager
def use_backend(backend: _backend.Backend) -> Iterator[None]:
    """Within the block, :func:`resguard.snapshot`, :func:`resguard.top_processes` and every
    ``Sampler()``, ``ProcessTable()``, Guard and Monitor made without a ``backend=`` use
    *backend* (``"linux"`` or ``"psutil"``), as ``RESGUARD_BACKEND`` would for a whole
    process; the previous default comes back after it. Objects made before the block keep
    the backend they were made with.

    >>> from resguard.testing import use_backend
    >>> import resguard
    >>> with use_backend("psutil"):
    ...     resguard.snapshot().memory.source_detail
    'psutil.virtual_memory()'
    """
    checked = _backend.checked_backend(backend)  # InvalidType / InvalidValue, before anything
    previous = _backend.set_default_backend(checked)
    try:
        yield
    finally:
        _backend.set_default_backend(previous)
