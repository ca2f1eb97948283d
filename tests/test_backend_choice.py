"""One rule picks the backend of everything that reads the machine: arguments that
re-root or name the kernel's files mean linux, and psutil with them is refused, the same
way for the sampler, the process table, ``describe`` and the budgets' command lines."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from resguard._errors import InvalidType, InvalidValue
from resguard.budget._match import CmdlineCache
from resguard.processes import ProcessTable, describe
from resguard.snapshot import Roots, Sampler
from resguard.testing import make_process

MAKERS: dict[str, Callable[[object], object]] = {
    "Sampler(roots=)": lambda backend: Sampler(Roots(proc="/x"), backend=backend),  # type: ignore[arg-type]
    "ProcessTable(roots=)": lambda backend: ProcessTable(Roots(proc="/x"), backend=backend),  # type: ignore[arg-type]
    "describe(proc=)": lambda backend: describe(
        make_process(os.getpid(), "p"),
        "/x",
        backend=backend,  # type: ignore[arg-type]
    ),
    "CmdlineCache(proc=)": lambda backend: CmdlineCache("/x", backend=backend),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("maker", MAKERS.values(), ids=MAKERS.keys())
def test_psutil_with_kernel_paths_is_refused_by_every_reader(
    maker: Callable[[object], object],
) -> None:
    with pytest.raises(
        InvalidValue, match=r"backend='psutil' cannot take .*expected backend='linux'"
    ):
        maker("psutil")


@pytest.mark.parametrize("maker", MAKERS.values(), ids=MAKERS.keys())
@pytest.mark.parametrize(
    ("backend", "error"), [(3, InvalidType), ("PSUTIL", InvalidValue), (b"linux", InvalidType)]
)
def test_a_bad_backend_is_refused_by_every_reader_even_with_kernel_paths(
    maker: Callable[[object], object], backend: object, error: type[Exception]
) -> None:
    """``CmdlineCache`` took ``backend=3`` silently when *proc* was not ``/proc``."""
    with pytest.raises(error, match=repr(backend).replace("(", r"\(")):
        maker(backend)
