"""Probes: pure functions from the operating system to values.

One module per source. Each returns ``None`` (never raises) where its source does not
exist on this platform or could not be read. ``reporting`` is the sense layer's one log
of damaged files, shared by the sampler and the process table.
"""
