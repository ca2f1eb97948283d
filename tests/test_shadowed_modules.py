"""``resguard.snapshot`` and ``resguard.profile`` are modules and functions at once: the
package attribute is the (callable) module, so ``rg.snapshot()`` calls the function and
``import resguard.snapshot as m`` binds the module whichever came first. The lazy import
used to store the function, after which ``import resguard.snapshot as m`` bound the
function and ``import resguard.snapshot._portable as m`` failed; the CLI did exactly that
(``resguard snapshot`` in-process: "internal error: AttributeError: 'function' object has
no attribute 'snapshot'")."""

from __future__ import annotations

import pytest

from support import run_python

SHADOWED = ("resguard.snapshot", "resguard.profile")  # the package's names for functions too


@pytest.mark.parametrize("module", SHADOWED)
def test_import_as_binds_the_module_after_the_function_was_used(module: str) -> None:
    name = module.rsplit(".", 1)[1]
    code = (
        f"import resguard\nresguard.{name}\nimport {module} as m\nprint(m.__name__, callable(m))\n"
    )
    assert run_python(code).split() == [module, "True"]


def test_the_package_attribute_still_calls_the_function() -> None:
    out = run_python(
        "import resguard as rg\n"
        "snap = rg.snapshot(children=False)\n"
        "import sys\nprint(type(snap).__name__, rg.snapshot is sys.modules['resguard.snapshot'])\n"
        "with rg.profile(label='x') as report: pass\n"
        "print(type(report).__name__)\n"
    )
    assert out.split() == ["Snapshot", "True", "Profile"]
