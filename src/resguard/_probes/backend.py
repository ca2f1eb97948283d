"""Which sensing backend reads this machine: ``linux`` (the kernel's files: ``/proc``,
cgroup v1/v2, PSI; fast and container-aware) or ``psutil`` (portable: every platform
psutil supports, host-wide numbers only).

The choice is made once per process, at first use: ``RESGUARD_BACKEND`` when it is set,
else ``linux`` on Linux and ``psutil`` elsewhere. A value that names no backend is
reported once and the platform's own is used (a typo in an environment variable must not
make every guarded request raise); the command line refuses it outright.
"""

from __future__ import annotations

import os
import sys
from typing import Final, Literal

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.log import get_logger
from resguard.units import shown

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "Backend",
    "checked_backend",
    "default_backend",
    "env_backend_error",
    "platform_backend",
]

Backend = Literal["linux", "psutil"]
BACKENDS: Final[tuple[Backend, ...]] = ("linux", "psutil")
ENV_VAR: Final = "RESGUARD_BACKEND"

_chosen: Backend | None = None


def platform_backend() -> Backend:
    """The backend this platform uses unless told otherwise."""
    return "linux" if sys.platform.startswith("linux") else "psutil"


def env_backend_error() -> InvalidValue | None:
    """The error a bad ``RESGUARD_BACKEND`` deserves (``None`` when it is unset or good);
    the command line raises it, the library only logs it."""
    value = os.environ.get(ENV_VAR)
    if value is None or value.strip() == "" or value.strip().lower() in BACKENDS:
        return None
    return InvalidValue(
        f"{ENV_VAR}={value!r} names no sensing backend; expected one of "
        f"{', '.join(BACKENDS)} (or unset: {platform_backend()} on this platform)"
    )


def default_backend() -> Backend:
    """The backend of samplers and process tables not given one: ``RESGUARD_BACKEND``, else
    :func:`platform_backend`. Read once; a bad value is logged once and ignored."""
    global _chosen
    if _chosen is None:
        value = os.environ.get(ENV_VAR, "").strip().lower()
        error = env_backend_error()
        if error is not None:
            get_logger("resguard.snapshot").warning("%s; using %s", error, platform_backend())
        _chosen = _as_backend(value) if error is None and value else platform_backend()
    return _chosen


def checked_backend(backend: object) -> Backend:
    """*backend* as given to ``Sampler(backend=...)`` or ``ProcessTable(backend=...)``
    (``None``: :func:`default_backend`), or a clear error quoting it."""
    if backend is None:
        return default_backend()
    if not isinstance(backend, str):
        raise InvalidType(
            f"backend={shown(backend)} is not a backend name; expected one of "
            f"{', '.join(map(repr, BACKENDS))} or None"
        )
    if backend not in BACKENDS:
        raise InvalidValue(
            f"backend={shown(backend)} names no sensing backend; expected one of "
            f"{', '.join(map(repr, BACKENDS))} or None"
        )
    return _as_backend(backend)


def _as_backend(name: str) -> Backend:
    return "linux" if name == "linux" else "psutil"
