"""The Monitor: samples in the background and publishes the latest verdict.

Readers (guards, middleware, metrics) pay one attribute read: ``monitor.state`` is replaced
whole, atomically, after every sample. Two loops run:

* the **fast loop** samples memory, CPU, PSI and this process, evaluates the policy and
  publishes the new :class:`State`, then waits in one ``poll()`` on the kernel's memory
  events (cgroup v1 thresholds armed at the policy's and the watched guards' edges, OOM
  notifications, v2 ``memory.events``, PSI triggers) with a timeout paced by the distance
  to the nearest edge; after an event it samples at *min_interval* for :data:`BURST_S`
  (see docs/monitor.md; :class:`MemoryEvent` is what ``subscribe_events`` callbacks get);
* the **slow loop** samples what is costly or may block (the process table, Docker,
  Ollama) every *slow_interval* and climbs the reclaim ladder when the verdict says
  WARNING or worse, so a slow source never delays a verdict. The table's first scan of
  a process knows only its average CPU since it started (``ProcessInfo.cpu_since_start``):
  the per-process CPU rules and CPU culprits judge that process from its next scan, one
  *slow_interval* later, so a process that was busy earlier and idles now is not blamed.

A thread runs each loop by default (``with monitor:`` or :meth:`Monitor.start`); under
``async with monitor:`` they are anyio tasks and the slow work runs in worker threads.
Both run the same steps, decided by plain functions of (state, now); only the waiting
differs.

Failures never stop the loops: a sample, a source, a rule, a subscriber or a reclaim step
that raises is logged once per kind of error (and once when it works again), and the loop
goes on. A tick that cannot produce a state publishes nothing, so the state grows *stale*:
its age (:meth:`State.age_s`) passes ``stale_after`` and :meth:`Monitor.unknown_reason`
says so, for guards and readiness checks that must not trust an old verdict forever.
"""

from __future__ import annotations

from resguard._probes.memevents import MemoryEvent
from resguard.monitor._decide import RELOG_AFTER_S as RELOG_AFTER_S
from resguard.monitor._events import EVENT_KINDS as EVENT_KINDS
from resguard.monitor._monitor import Monitor
from resguard.monitor._options import MIN_INTERVAL_S as MIN_INTERVAL_S
from resguard.monitor._state import Source, State

__all__ = ["MemoryEvent", "Monitor", "Source", "State"]

JOIN_TIMEOUT_S = 10.0
"""How long :meth:`Monitor.stop` waits for each background thread (one blocked in a
subscriber or a source finishes on its own, and closes its own pipe)."""

BURST_S = 1.0
"""How long the fast loop samples at ``min_interval`` after a kernel memory event before it
relaxes to its paced interval again (Android lmkd's pattern): an event says memory moves
now, and the next edge may be close behind. Pressure alone (a PSI trigger, v1's
``pressure_level``) is sampled at once but starts no burst: it also fires on a calm host's
passing stalls."""

FIRST_SLOW_WAIT_S = 2.0
"""How long :meth:`Monitor.start` waits for the first slow sample (the process table and
the sources), so that it never hangs on a source that does not answer."""

for _public in (MemoryEvent, Monitor, Source, State):
    _public.__module__ = __name__
del _public
