"""The default sizer: honest for common cached values, bounded for the rest, never raising."""

from __future__ import annotations

import gc
import subprocess
import sys
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resguard.cache._sizeof import MAX_DEPTH, SAMPLE_ITEMS, sizeof


def test_flat_values_are_their_getsizeof() -> None:
    for value in (b"x" * 1000, "y" * 77, bytearray(4096), 12345678901234567890, 1.5, None):
        assert sizeof(value) == sys.getsizeof(value)


def test_memoryview_counts_the_buffer_it_keeps_alive() -> None:
    payload = bytes(100_000)
    view = memoryview(payload)[:10]
    assert sizeof(view) >= sys.getsizeof(payload)


def test_containers_add_their_items_and_count_shared_ones_once() -> None:
    chunk = b"z" * 10_000
    distinct = [bytes(10_000) for _ in range(10)]
    assert sizeof(distinct) >= 10 * 10_000
    assert sizeof(distinct) == sys.getsizeof(distinct) + sum(map(sys.getsizeof, distinct))
    shared = [chunk] * 10
    assert sizeof(shared) == sys.getsizeof(shared) + sys.getsizeof(chunk)
    mapping = {"a": chunk, "b": bytes(5000)}
    assert sizeof(mapping) > 15_000


def test_cycles_and_deep_nesting_terminate() -> None:
    loop: list[object] = []
    loop.append(loop)
    assert sizeof(loop) >= sys.getsizeof(loop)
    deep: list[object] = [b"x" * 10_000]
    for _ in range(100):
        deep = [deep]
    # beyond MAX_DEPTH only headers count: the payload at the bottom is not reached
    assert sizeof(deep) < 10_000
    shallow: list[object] = [b"x" * 10_000]
    for _ in range(MAX_DEPTH - 1):
        shallow = [shallow]
    assert sizeof(shallow) > 10_000


def test_large_containers_are_sampled_and_scaled() -> None:
    items = [bytes(100) for _ in range(SAMPLE_ITEMS * 10)]
    exact = sys.getsizeof(items) + sum(map(sys.getsizeof, items))
    assert sizeof(items) == pytest.approx(exact, rel=0.01)


def test_objects_count_their_attributes() -> None:
    class Holder:
        def __init__(self) -> None:
            self.payload = bytes(50_000)

    assert sizeof(Holder()) > 50_000


def test_a_broken_sizeof_or_nbytes_does_not_raise() -> None:
    class Broken:
        def __sizeof__(self) -> int:
            raise RuntimeError("no")

    class OddNbytes:
        nbytes = "many"

    assert sizeof(Broken()) > 0
    assert sizeof(OddNbytes()) > 0


def test_numpy_arrays_count_nbytes_views_included() -> None:
    np = pytest.importorskip("numpy")
    array = np.ones(100_000)
    assert array.nbytes <= sizeof(array) < array.nbytes + 1000
    view = array[:50_000]
    assert view.nbytes <= sizeof(view) < view.nbytes + 1000
    assert sizeof((array, view)) > array.nbytes + view.nbytes


def test_importing_the_sizer_does_not_import_numpy() -> None:
    code = (
        "import sys, resguard.cache._sizeof as s; s.sizeof([b'x', {'a': 1}]);"
        "print('numpy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


def _allocated_per_value(make: Callable[[], object], copies: int = 16) -> tuple[object, int]:
    gc.collect()
    holder: list[object] = [None] * copies
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(copies):
            holder[i] = make()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return holder[0], (after - before) // copies


@pytest.mark.parametrize(
    "make",
    [
        lambda: bytes(4096),
        lambda: "".join(["q"] * 500),
        lambda: [f"item-{i}" for i in range(500)],
        lambda: {f"key-{i}": i * 1000 for i in range(500)},
        lambda: tuple(bytes(2048) for _ in range(8)),
    ],
    ids=["bytes", "str", "list-of-str", "dict-str-int", "tuple-of-bytes"],
)
def test_error_against_tracemalloc_is_small(make: Callable[[], object]) -> None:
    value, allocated = _allocated_per_value(make)
    assert sizeof(value) == pytest.approx(allocated, rel=0.15)


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=50),
    st.binary(max_size=200),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=8),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=8), inner, max_size=8),
        st.frozensets(st.integers(), max_size=8),
    ),
    max_leaves=40,
)


@given(_values)
def test_any_nested_builtin_value_is_sized_at_least_its_header(value: object) -> None:
    size = sizeof(value)
    assert isinstance(size, int)
    assert size >= sys.getsizeof(value)


@given(
    st.lists(
        st.one_of(st.text(max_size=40), st.binary(max_size=40), st.floats(allow_nan=False)),
        max_size=30,
    ),
    st.sampled_from(["str", "bytes", "float", "mixed"]),
)
def test_the_shortcut_for_uniform_lists_matches_getsizeof(items: list[object], kind: str) -> None:
    if kind != "mixed":
        wanted = {"str": str, "bytes": bytes, "float": float}[kind]
        items = [item for item in items if type(item) is wanted]
    unique = {id(item): item for item in items}
    exact = sys.getsizeof(items) + sum(map(sys.getsizeof, unique.values()))
    assert sizeof(items) == exact


# ------------------------------------------------------------------ hostile objects (issue 11)


class _HostileDict:
    """An object whose ``__dict__`` raises something other than AttributeError."""

    def __init__(self) -> None:
        self.payload = bytes(1000)

    def __getattribute__(self, name: str) -> object:
        if name == "__dict__":
            raise RuntimeError("no __dict__ for you")
        return object.__getattribute__(self, name)


class _HostileClass:
    """isinstance() asks ``__class__`` of an object that is not the type it checks."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise RuntimeError("no class for you")


class _HostileList(list):  # type: ignore[type-arg]
    def __iter__(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("no iteration for you")

    def __len__(self) -> int:
        raise RuntimeError("no length for you")


class _HostileSizeof:
    def __sizeof__(self) -> int:
        raise ValueError("no size for you")


def _released_view() -> memoryview:
    view = memoryview(bytearray(10_000))
    view.release()
    return view


@pytest.mark.parametrize(
    "make",
    [
        _HostileDict,
        _HostileClass,
        lambda: _HostileList([bytes(10)]),
        _HostileSizeof,
        _released_view,
    ],
    ids=["__dict__", "__class__", "len-and-iter", "__sizeof__", "released-memoryview"],
)
def test_hostile_objects_fall_back_to_a_shallow_size(make: Callable[[], object]) -> None:
    value = make()
    size = sizeof(value)
    assert isinstance(size, int)
    assert 0 < size < 10_000  # its own header, nothing it might hold


def test_a_hostile_item_costs_only_itself_in_a_container() -> None:
    payload = bytes(50_000)
    value = [payload, _HostileDict(), _released_view(), _HostileClass()]
    assert sizeof(value) > 50_000  # the healthy item is still counted in full
    assert sizeof({"a": payload, "b": _HostileSizeof()}) > 50_000


def test_the_sizer_does_not_reach_a_memoized_builtin() -> None:
    import builtins

    calls = []
    real_len = builtins.len

    def spy(obj: object) -> int:
        calls.append(type(obj))
        return real_len(obj)  # type: ignore[arg-type,unused-ignore]

    builtins.len = spy
    try:
        size = sizeof([f"text-{i}" for i in range(10)] + [{"k": b"v" * 100}])
    finally:
        builtins.len = real_len
    assert size > 100
    assert calls == []
