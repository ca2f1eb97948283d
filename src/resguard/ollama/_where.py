"""Where an Ollama server lives and how much room it has there.

A model Ollama loads takes memory in Ollama's process, not in the service that asks for
it: a service in a 300 MiB cgroup may ask a local Ollama, which has the machine, for a
1.5 GB model. :class:`OllamaHeadroom` measures the room where the server runs: for a
local host (loopback or one of this machine's addresses) the machine's available memory,
bounded by the cgroup of the process listening on the server's port when it has a limit;
for a remote host it is unknown (Ollama's API does not publish its host's free memory).
"""

from __future__ import annotations

import ipaddress
import socket
import time
import urllib.parse
from collections.abc import Callable

import psutil

from resguard._modules.faults import FaultLog
from resguard._modules.log import get_logger
from resguard._probes import cgroup as _cgroup
from resguard._probes.identity import Identity, read_stat
from resguard._probes.paths import DEFAULT_ROOTS, Roots
from resguard._probes.sockets import listener, port_inodes

__all__ = ["LOOKUP_RETRY_S", "RELOOK_S", "OllamaHeadroom", "is_local"]

log = get_logger("resguard.ollama")
LOOKUP_RETRY_S = 30.0
"""A fruitless look for the listener is tried again after this long while the port's
sockets stay the same (another user's process, seen only by root)."""
RELOOK_S = 1.0
"""The port's sockets are read again at most this often when no listener is kept: a new
one (Ollama restarted, perhaps in another cgroup) is looked for at once."""


def _local_addresses() -> set[str]:
    try:
        return {
            address.address.split("%")[0].lower()
            for addresses in psutil.net_if_addrs().values()
            for address in addresses
            if address.family in (socket.AF_INET, socket.AF_INET6)
        }
    except Exception:  # a probe that fails: only loopback counts as local
        return set()


def is_local(hostname: str) -> bool:
    """Whether *hostname* (from a URL) is this machine: loopback, the unspecified address,
    ``localhost``, this host's name or one of its interfaces' addresses. No name is looked
    up in DNS (that could hang): any other name is remote."""
    name = hostname.strip("[]").lower()
    if name in ("localhost", "localhost.localdomain") or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name == socket.gethostname().lower()
    if address.is_loopback or address.is_unspecified:
        return True
    return str(address) in _local_addresses()


class OllamaHeadroom:
    """The room an Ollama server has for another model: a
    :class:`resguard.models.HeadroomSource` for the server at *host* (a URL as
    :func:`resguard.ollama.parse_host` gives it; ``None``: this machine).

    - **Local host** (loopback, ``localhost``, this host's name or addresses): the
      machine's available memory (``MemAvailable``), and no more than the room left in
      the memory cgroup of the process listening on the server's port (its tightest limit
      minus its working set) when that cgroup has a limit. The process is found from
      ``/proc/net/tcp{,6}`` and ``/proc/<pid>/fd``; seeing another user's process needs
      root. When it cannot be found the machine's memory counts, with one warning; the
      port's sockets are read again at most every :data:`RELOOK_S` and a new one (Ollama
      restarted) is looked for at once, the same ones after :data:`LOOKUP_RETRY_S`.
    - **Remote host**: ``None`` (unknown, never 0): Ollama does not publish its host's
      free memory, so loads are admitted and the remote Ollama's own check answers (its
      "model requires more system memory" is raised as ``ResourceExhausted``). Pass a
      ``headroom=`` of your own that measures that host to check before loading.

    It never raises: what cannot be read is unknown (``None``) or, for the cgroup, left out.
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        roots: Roots = DEFAULT_ROOTS,
        machine: Callable[[], int | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        split = urllib.parse.urlsplit(host or "")
        self.host = host
        self.port: int | None = None  # None: no server named, the machine's memory alone
        if host is not None:
            self.port = split.port or (443 if split.scheme == "https" else 80)
        self.local = host is None or is_local(split.hostname or "127.0.0.1")
        self._roots = roots
        self._machine = machine or _machine_available_bytes
        self._clock = clock
        self._pid: Identity | None = None  # the listener: its pid and start time
        self._looked_at: float | None = None
        self._looked_inodes: frozenset[int] = frozenset()  # the port's sockets at that look
        self._faults = FaultLog(log)

    def __repr__(self) -> str:
        return f"<OllamaHeadroom {self.host or 'this machine'}: {self.where()}>"

    def where(self) -> str:
        """What the headroom is measured on, in words."""
        if not self.local:
            return "unknown (a remote Ollama)"
        if self._pid is None:
            return "this machine's memory"
        return f"this machine's memory and the cgroup of Ollama's process {self._pid.pid}"

    @property
    def pid(self) -> int | None:
        """The process found listening on the server's port (``None``: not found yet)."""
        self._listener()
        return None if self._pid is None else self._pid.pid

    def headroom_bytes(self) -> int | None:
        """Bytes a model load may take in Ollama now; ``None`` when unknown."""
        if not self.local:
            return None
        machine = self._machine()
        bound = self._cgroup_room()
        if machine is None:
            return bound
        return machine if bound is None else min(machine, bound)

    def _listener(self) -> int | None:
        """The kept listener while it lives; else a look: the port's sockets (cheap) at
        most every :data:`RELOOK_S`, and the ``/proc/*/fd`` scan (bounded by
        :data:`~resguard._probes.sockets.SCAN_DEADLINE_S`) only for sockets not scanned
        for before or after :data:`LOOKUP_RETRY_S`."""
        if self.port is None:
            return None
        if self._pid is not None:
            if self._pid.matches(read_stat(self._pid.pid, self._roots.proc)):
                return self._pid.pid
            self._pid, self._looked_at = None, None  # gone or replaced: look again at once
        now = self._clock()
        if self._looked_at is not None and now - self._looked_at < RELOOK_S:
            return None
        inodes = port_inodes(self.port, self._roots.proc)
        if (
            self._looked_at is not None
            and inodes == self._looked_inodes
            and now - self._looked_at < LOOKUP_RETRY_S
        ):
            return None  # the same sockets the last scan found no process for
        self._looked_at, self._looked_inodes = now, inodes
        found = None
        if inodes:
            found = listener(self.port, self._roots.proc, clock=self._clock, inodes=inodes)
        where = f"Ollama's process (port {self.port})"
        if found is None:
            self._faults.failed(
                where,
                f"no process seen listening on port {self.port} (another user's needs "
                "root to be seen); Ollama's headroom is this machine's available memory",
            )
            return None
        self._faults.recovered(where)
        self._pid = found
        return found.pid

    def _cgroup_room(self) -> int | None:
        pid = self._listener()
        if pid is None:
            return None
        try:
            location = _cgroup.locate(self._roots, str(pid))
            bound = None if location is None else _cgroup.memory_bound(location)
        except Exception:  # a probe that fails leaves the cgroup out, never fails a load
            return None
        if bound is None:
            return None
        return max(bound.limit - bound.memory.working_set, 0)


def _machine_available_bytes() -> int | None:
    try:
        return int(psutil.virtual_memory().available)
    except Exception:  # unknown, never 0
        return None
