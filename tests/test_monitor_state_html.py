"""A Monitor state in a notebook: its verdict (escaped) above the grouped snapshot."""

from __future__ import annotations

from resguard.rules import Level, Policy, Threshold
from resguard.testing import StaticMonitor, make_snapshot


def test_a_state_shows_its_verdict_then_the_grouped_snapshot() -> None:
    policy = Policy([Threshold("memory.percent", ">", 50, level=Level.WARNING, name="<b>mem</b>")])
    monitor = StaticMonitor(make_snapshot(memory_percent=90), policy=policy)
    html = monitor.state._repr_html_()
    assert html.startswith("<p>resguard state #")
    assert "<b>WARNING</b>" in html
    assert "&lt;b&gt;mem&lt;/b&gt;" in html  # a rule's name is text, never markup
    assert "<b>mem</b>" not in html
    assert ">Memory<" in html
    assert repr(monitor.state.snapshot.taken_at) not in html  # a time, not a raw epoch
