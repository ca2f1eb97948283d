"""Which sensing backend reads this machine: ``linux`` (the kernel's files: ``/proc``,
cgroup v1/v2, PSI; fast and container-aware) or ``psutil`` (portable: every platform
psutil supports, host-wide numbers only).

The choice is made once per process, at first use: ``RESGUARD_BACKEND`` when it is set,
else ``linux`` on Linux and ``psutil`` elsewhere. A value that names no backend is
reported once and the platform's own is used (a typo in an environment variable must not
make every guarded request raise); the command line refuses it outright.

Names typed in a shell (``RESGUARD_BACKEND``, ``resguard --backend``) may be in any case
and carry surrounding whitespace (:func:`typed_backend`); the Python argument
``backend=`` takes the exact names.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Final, Literal

from resguard._errors import InvalidType, InvalidValue
from resguard._modules.log import get_logger
from resguard.units import shown

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "Backend",
    "backend_for",
    "checked_backend",
    "default_backend",
    "env_backend_error",
    "platform_backend",
    "set_default_backend",
    "typed_backend",
]

Backend = Literal["linux", "psutil"]
BACKENDS: Final[tuple[Backend, ...]] = ("linux", "psutil")
ENV_VAR: Final = "RESGUARD_BACKEND"

_chosen: Backend | None = None
_QUOTED_MAX_CHARS = 80  # a quoted value longer than this is cut: an error stays one line


def platform_backend() -> Backend:
    """The backend this platform uses unless told otherwise."""
    return "linux" if sys.platform.startswith("linux") else "psutil"


def env_backend_error() -> InvalidValue | None:
    """The error a bad ``RESGUARD_BACKEND`` deserves (``None`` when it is unset or good);
    the command line raises it, the library only logs it."""
    value = os.environ.get(ENV_VAR)
    if value is None or value.strip() == "" or typed_backend(value) is not None:
        return None
    return InvalidValue(
        f"{ENV_VAR}={_quoted(value)} names no sensing backend; expected one of "
        f"{', '.join(BACKENDS)} (or unset: {platform_backend()} on this platform)"
    )


def default_backend() -> Backend:
    """The backend of samplers and process tables not given one: ``RESGUARD_BACKEND``, else
    :func:`platform_backend`. Read once; a bad value is logged once and ignored."""
    global _chosen
    if _chosen is None:
        typed = typed_backend(os.environ.get(ENV_VAR, ""))
        error = env_backend_error()
        if error is not None:
            get_logger("resguard.snapshot").warning("%s; using %s", error, platform_backend())
        _chosen = typed if typed is not None else platform_backend()
    return _chosen


def typed_backend(text: str) -> Backend | None:
    """The backend *text* names as typed in a shell (``RESGUARD_BACKEND``, ``--backend``):
    any case, surrounding whitespace ignored; ``None`` when it names none."""
    name = text.strip().lower()
    return _as_backend(name) if name in BACKENDS else None


def checked_backend(backend: object) -> Backend:
    """*backend* as given to ``Sampler(backend=...)`` or ``ProcessTable(backend=...)``
    (``None``: :func:`default_backend`), or a clear error quoting it."""
    if backend is None:
        return default_backend()
    if not isinstance(backend, str):
        raise InvalidType(
            f"backend={shown(backend)} is not a backend name; expected "
            f"{' or '.join(map(repr, BACKENDS))}, or None for the default"
        )
    if backend not in BACKENDS:
        exact = " (the exact name, in lower case)" if typed_backend(backend) else ""
        raise InvalidValue(
            f"backend={_quoted(backend)} names no sensing backend; expected "
            f"{' or '.join(map(repr, BACKENDS))}{exact}, or None for the default"
        )
    return _as_backend(backend)


def backend_for(backend: object, kernel_args: Mapping[str, object]) -> Backend:
    """The backend of a sampler, process table or command-line cache given *backend* and
    its *kernel_args*: the arguments that re-root or name the kernel's files (``roots=``,
    ``cgroup=``, ``proc=``), each already ``None`` when left at its default. Such
    arguments only mean something to the kernel readers, so with ``backend=None`` they
    pick ``"linux"``, and ``"psutil"`` with them is refused, quoting both."""
    given = {name: value for name, value in kernel_args.items() if value is not None}
    if backend is None and given:
        return "linux"
    chosen = checked_backend(backend)
    if chosen == "psutil" and given:
        quoted = " and ".join(f"{name}={shown(value)}" for name, value in given.items())
        raise InvalidValue(
            f"backend={shown(backend)} cannot take {quoted}: they re-root or name the "
            "kernel's files, which only the linux backend reads; expected backend='linux' "
            "or None with them"
        )
    return chosen


def set_default_backend(backend: Backend | None) -> Backend | None:
    """Make *backend* the process's default from now on (``None``: read
    ``RESGUARD_BACKEND`` again at the next use); returns the previous choice. Samplers and
    tables made before keep theirs; ``resguard.snapshot()`` and ``top_processes()`` follow
    (they keep one default per backend)."""
    global _chosen
    previous = _chosen
    _chosen = None if backend is None else checked_backend(backend)
    return previous


def _quoted(text: str) -> str:
    """``repr(text)``, cut after :data:`_QUOTED_MAX_CHARS` characters (a 100 KB variable
    would otherwise make a 100 KB error line)."""
    if len(text) <= _QUOTED_MAX_CHARS:
        return repr(text)
    return f"{text[:_QUOTED_MAX_CHARS]!r}… ({len(text)} characters)"


def _as_backend(name: str) -> Backend:
    return "linux" if name == "linux" else "psutil"
