"""resguard.testing: the public test doubles behave as documented and name their public home."""

from __future__ import annotations

import pickle

import resguard.testing
from resguard.testing import ManualClock


def test_public_test_doubles_name_resguard_testing_as_their_module() -> None:
    # Reprs, pickles and the API reference (autodoc skips a class whose __module__ is
    # another module's) show the path users import it from, not a private module.
    for name in resguard.testing.__all__:
        public = getattr(resguard.testing, name)
        module = getattr(public, "__module__", None)
        if module is not None:
            assert not any(part.startswith("_") for part in module.split(".")), (name, module)
    assert ManualClock.__module__ == "resguard.testing"
    assert repr(ManualClock()).startswith("<resguard.testing.ManualClock object")


def test_a_manual_clock_pickles_by_its_public_path_and_keeps_its_time() -> None:
    clock = ManualClock(start_s=5.0)
    clock.advance(2.5)
    data = pickle.dumps(clock)
    assert b"resguard.testing" in data
    assert b"_modules" not in data
    assert pickle.loads(data)() == 7.5
