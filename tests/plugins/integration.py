"""Skip-or-fail for tests that need real parts (root, cgroups, Docker).

On a laptop such tests skip with a reason. With ``RESGUARD_REQUIRE_INTEGRATION=1`` (set by
``.ci/run``) the same condition fails the test, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRED = os.environ.get("RESGUARD_REQUIRE_INTEGRATION", "") not in ("", "0")


def unavailable(reason: str) -> NoReturn:
    """Skip the current test with *reason*, or fail it where integration is required."""
    if REQUIRED:
        pytest.fail(f"integration required (RESGUARD_REQUIRE_INTEGRATION=1) but {reason}")
    pytest.skip(reason)
