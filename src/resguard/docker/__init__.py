"""Docker containers: fast stats, memory limits and duplicate services.

``docker stats --no-stream`` takes about 2 s and the SDK's ``container.stats(stream=False)``
about 1.75 s per container, because the engine waits for a second CPU sample. A monitor
cannot wait that long, so :class:`Containers` asks the engine only for the list of running
containers (one quick call) and reads each container's numbers from its cgroup files when
the engine runs on this machine (cgroup v1 ``memory/docker/<id>``, the systemd driver's
``system.slice/docker-<id>.scope``, cgroup v2 alike). Containers whose cgroup is not found
here (a remote engine, Docker Desktop's VM) are asked through the API, all at once, with the
engine's one-shot stats. Both ways give the same numbers:

- ``memory_usage`` is the cgroup's usage, ``memory_used`` the working set (usage minus
  inactive file cache, as ``docker stats`` and the kubelet count it);
- ``memory_limit`` is ``None`` when the container has no limit of its own (the engine then
  reports the host's memory, which is not a limit of the container);
- ``cpu_percent`` (100 per full core) is measured between two calls on the same
  :class:`Containers`, so the first call has ``None`` for it.

Every failure of the engine (down, socket missing, a socket that accepts but never
answers, a refused request) raises :class:`resguard.DockerError`; the SDK's exceptions
never leak. Each request to the engine ends within ``timeout`` whatever the engine does
(no answer, or an answer dripped one byte at a time), so a call against a dead or hung
engine raises within ``timeout`` (its first request fails; a call makes a few requests
when the engine answers). A request past its deadline is abandoned in its thread; while
it is still stuck, later calls fail at once. The Monitor source
turns that into ``containers = None`` with one warning. Nothing here stops a container
unless :meth:`Containers.stop` is called.

**Sizes.** :meth:`Containers.set_limit` hands sizes to Docker, so it reads a size string
the way ``docker update --memory`` does (go-units ``RAMInBytes``): case-insensitive,
``b``, ``k``/``kb``/``kib``, ``m``/``mb``/``mib``, ``g``, ``t``, ``p`` all binary
(``"512MB"`` is 512 MiB = 536,870,912 bytes), a fraction truncated to whole bytes.
Everywhere else resguard's own convention holds (``MB`` = 10**6, ``MiB`` = 2**20).

Needs the optional ``docker`` package: ``pip install 'resguard[docker]'``.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

try:
    import docker as _sdk  # noqa: F401  (the extra is checked here, before any submodule)
    import requests.exceptions as _requests_errors  # noqa: F401
except ImportError as _exc:  # pragma: no cover - exercised in a venv without the extra
    raise ImportError(
        "resguard.docker needs the 'docker' package; install it with "
        "pip install 'resguard[docker]' (from a checkout of resguard: "
        "pip install -e '.[docker]')",
        name=_exc.name,
    ) from _exc

from resguard.docker._containers import Containers, ContainersSource, Method
from resguard.docker._values import (
    ContainerLimits,
    ContainerRef,
    Duplicate,
    docker_bytes,
    find_duplicates,
)

__all__ = [
    "ContainerLimits",
    "ContainerRef",
    "Containers",
    "ContainersSource",
    "Duplicate",
    "docker_bytes",
    "find_duplicates",
]

for _public in (ContainerLimits, ContainerRef, Containers, ContainersSource, Duplicate):
    _public.__module__ = __name__
for _function in (docker_bytes, find_duplicates):
    _function.__module__ = __name__
del _public, _function
_ = Method  # public too: the type of Containers(method=...)


def __getattr__(name: str) -> Any:
    if name == "cli":  # the command moved to resguard.cli.docker (presentation lives there)
        warnings.warn("resguard.docker.cli moved to resguard.cli.docker.cli", DeprecationWarning, 2)
        return importlib.import_module("resguard.cli.docker").cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
