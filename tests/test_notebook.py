"""The example notebook and the IPython extension, executed by a real Jupyter kernel."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from test_notebook_top import (  # noqa: E402 (after the skips: it needs IPython)
    expected_command,
    hostile_process,
    read_table,
    row_of,
)
from test_snapshot_html import Grouped  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "notebooks" / "profiling.ipynb"
SIZE = r"-?[0-9.]+ (?:B|KiB|MiB|GiB)"
DECIMAL_SIZE = re.compile(r"\d\s*(?:kB|KB|MB|GB|TB)\b")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def kernel_name() -> str:
    """A kernel that runs this interpreter: "python3" when its spec resolves here (a spec
    whose argv starts with plain "python" is run with sys.executable by jupyter_client),
    else one installed into this environment."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        spec = None
    if spec is not None and spec.argv and spec.argv[0] in ("python", "python3", sys.executable):
        return "python3"
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return "python3"


def execute(notebook: Any, kernel_name: str, cwd: Path) -> Any:
    client = nbclient.NotebookClient(
        notebook, kernel_name=kernel_name, timeout=300, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return notebook


def outputs_of(cell: Any, mime: str) -> list[Any]:
    return [
        output["data"][mime]
        for output in cell.get("outputs", ())
        if output.get("output_type") in ("display_data", "execute_result")
        and mime in output.get("data", {})
    ]


def mib(text: str) -> float:
    """A printed size (``"-1.5 MiB"``) in MiB."""
    number, unit = text.split()
    return float(number) * {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit] / 2**20


def stream_text(cell: Any) -> str:
    return "".join(
        output.get("text", "")
        for output in cell.get("outputs", ())
        if output.get("output_type") == "stream"
    )


def cell_with(notebook: Any, text: str) -> Any:
    matches = [cell for cell in notebook.cells if cell.cell_type == "code" and text in cell.source]
    assert len(matches) == 1, f"expected one code cell containing {text!r}"
    return matches[0]


def assert_png(data: str) -> None:
    raw = base64.b64decode(data)
    assert raw.startswith(PNG_SIGNATURE)
    from PIL import Image

    image = Image.open(io.BytesIO(raw))
    image.load()  # decodes every pixel, fails on a truncated or corrupt file
    assert image.format == "PNG"
    assert image.width > 100
    assert image.height > 100


@pytest.fixture(scope="module")
def executed(kernel_name: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import resguard

    if not hasattr(resguard, "load_ipython_extension"):
        pytest.fail(
            "resguard/__init__.py must define load_ipython_extension(ipython) "
            "(it imports resguard.notebook lazily) for %load_ext resguard"
        )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    return execute(notebook, kernel_name, tmp_path_factory.mktemp("notebook"))


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_without_errors(executed: Any) -> None:
    for cell in executed.cells:
        if cell.cell_type != "code":
            continue
        errors = [output for output in cell.outputs if output.output_type == "error"]
        assert not errors, f"cell {cell.source[:40]!r} failed: {errors}"


@pytest.mark.slow
def test_the_profile_peak_matches_the_200_mb_allocation(executed: Any) -> None:
    text = stream_text(cell_with(executed, "(prof.peak_rss_delta)"))
    match = re.search(rf"peak above baseline: ({SIZE})", text)
    assert match, text
    assert mib(match.group(1)) == pytest.approx(200, rel=0.10)
    assert not DECIMAL_SIZE.search(text)

    summary = outputs_of(cell_with(executed, 'label="200 MiB bytearray"'), "text/html")
    assert summary
    assert "peak_rss" in summary[-1]
    assert "200 MiB bytearray" in summary[-1]
    assert not DECIMAL_SIZE.search(summary[-1])


@pytest.mark.slow
def test_the_plot_is_rendered_as_png(executed: Any) -> None:
    pngs = outputs_of(cell_with(executed, "prof.plot()"), "image/png")
    assert len(pngs) == 1
    assert_png(pngs[0])


@pytest.mark.slow
def test_the_cell_magic_shows_summary_and_plot_and_keeps_the_profile(executed: Any) -> None:
    cell = cell_with(executed, "%%resguard")
    html = outputs_of(cell, "text/html")
    assert any("resguard profile: cell" in item for item in html)
    pngs = outputs_of(cell, "image/png")
    assert len(pngs) == 1
    assert_png(pngs[0])
    text = stream_text(cell_with(executed, "cell peak above baseline"))
    match = re.search(rf"cell peak above baseline: ({SIZE})", text)
    assert match, text
    assert mib(match.group(1)) == pytest.approx(200, rel=0.10)


@pytest.mark.slow
def test_rss_and_tracemalloc_differ_for_numpy_zeros(executed: Any) -> None:
    text = stream_text(cell_with(executed, "np.zeros(200 * MiB // 8)"))
    found = {name: mib(size) for name, size in re.findall(rf"(zeros|ones): RSS ({SIZE})", text)}
    traced = {
        name: mib(size)
        for name, size in re.findall(rf"(zeros|ones): .*tracemalloc peak ({SIZE})", text)
    }
    assert found["zeros"] < 20
    assert found["ones"] == pytest.approx(200, rel=0.10)
    assert traced["zeros"] >= 200
    assert traced["ones"] >= 200
    assert not DECIMAL_SIZE.search(text)


@pytest.mark.slow
def test_top_and_snapshot_render_as_html_tables(executed: Any) -> None:
    top = outputs_of(cell_with(executed, "%resguard_top"), "text/html")
    assert top
    assert "<table>" in top[0]
    assert "top 5 processes by memory" in top[0]
    assert top[0].count("<tr>") == 6  # a header and five rows
    snapshot_html = outputs_of(cell_with(executed, "rg.snapshot()"), "text/html")
    assert snapshot_html
    grouped = Grouped()
    grouped.feed(snapshot_html[0])
    assert grouped.order[:4] == ["Memory", "Swap", "CPU", "Pressure"]
    assert grouped.sections["Memory"]["limit"].endswith(("MiB", "GiB", "TiB"))
    assert grouped.caption.startswith("resguard snapshot at 20")  # a local time, not epoch


@pytest.mark.slow
def test_magic_options_errors_and_a_bare_figure(kernel_name: str, tmp_path: Path) -> None:
    """The extension in a fresh kernel: options, an error inside a profiled cell, and a
    bare Figure shown as PNG without pyplot ever being imported."""
    from nbformat import v4

    # nbformat has no type hints: its two builders, typed here
    new_notebook: Callable[..., Any] = v4.new_notebook
    new_code_cell: Callable[[str], Any] = v4.new_code_cell

    notebook = new_notebook(
        cells=[
            new_code_cell("%load_ext resguard.notebook"),
            new_code_cell(
                "%%resguard --no-plot --tracemalloc --uss-interval off\n"
                "kept = [bytes(1000) for _ in range(1000)]"
            ),
            new_code_cell(
                "p = _resguard_profile\n"
                "print(p.peak_traced >= 1_000_000, p.peak_uss is None, "
                "len(p.samples) >= 2)"
            ),
            new_code_cell("%%resguard --no-plot\nraise ValueError('inside the cell')"),
            new_code_cell(
                "print(type(_resguard_profile).__name__, len(_resguard_profile.samples))"
            ),
            new_code_cell(
                "import sys\nfrom resguard.profile import profile\n"
                "with profile() as q:\n    pass\n"
                "print('matplotlib.pyplot' in sys.modules)\nq.plot()"
            ),
            new_code_cell("from resguard.processes import top_processes\ntop_processes(3)"),
            new_code_cell("[1, 2]"),
            new_code_cell(
                "from resguard.rules import Level, Policy, Threshold\n"
                "from resguard.snapshot import snapshot\n"
                "Policy([Threshold('memory.percent', '>=', 0, "
                "level=Level.WARNING)]).evaluate(snapshot())"
            ),
        ],
        metadata={
            "kernelspec": {"name": kernel_name, "language": "python", "display_name": "Python 3"}
        },
    )
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=300,
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    cells = notebook.cells
    assert not outputs_of(cells[1], "image/png")  # --no-plot
    assert outputs_of(cells[1], "text/html")
    assert stream_text(cells[2]).split() == ["True", "True", "True"]
    errors = [o for o in cells[3].outputs if o.output_type == "error"]
    assert errors
    assert errors[0].ename == "ValueError"
    assert outputs_of(cells[3], "text/html")  # the summary still shows
    name, count = stream_text(cells[4]).split()
    assert name == "Profile"
    assert int(count) >= 2  # the first and the last; IPython's traceback may take 100 ms
    assert stream_text(cells[5]).strip() == "False"
    pngs = outputs_of(cells[5], "image/png")
    assert len(pngs) == 1
    assert_png(pngs[0])
    top = outputs_of(cells[6], "text/html")
    assert top
    assert top[0].count("<tr>") == 4  # a header and three process rows
    assert not outputs_of(cells[7], "text/html")  # other lists show as usual
    verdict = outputs_of(cells[8], "text/html")
    assert verdict
    assert "WARNING" in verdict[0]


@pytest.mark.parametrize(
    ("magic", "line", "text"),
    [
        ("cell", "--interval 0", "above zero"),
        ("cell", "--interval 1ns", "1ms floor"),
        ("cell", "--uss-interval soon", "'soon'"),
        ("line", "-n -1", "-1 is negative"),
        ("line", "--interval soon", "'soon'"),
    ],
)
def test_bad_magic_options_are_one_line_usage_errors(magic: str, line: str, text: str) -> None:
    """IPython shows a UsageError as one line; a ResguardError would be a traceback."""
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    shell: Any = InteractiveShell.instance()  # IPython is not fully typed
    try:
        shell.extension_manager.load_extension("resguard.notebook")
        run: Callable[[], object] = (
            (lambda: shell.run_cell_magic("resguard", line, "x = 1"))
            if magic == "cell"
            else (lambda: shell.run_line_magic("resguard_top", line))
        )
        with pytest.raises(UsageError, match=text):
            run()
    finally:
        InteractiveShell.clear_instance()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for the child")
def test_the_top_magic_in_a_real_kernel_shows_command_lines(
    kernel_name: str, tmp_path: Path
) -> None:
    """The magic in a kernel shows the child's command line, escaped and cut."""
    from nbformat import v4

    new_notebook: Callable[..., Any] = v4.new_notebook
    new_code_cell: Callable[[str], Any] = v4.new_code_cell
    notebook = new_notebook(
        cells=[
            new_code_cell("%load_ext resguard.notebook"),
            new_code_cell("%resguard_top -n 100000 --by memory --interval 0.1s"),
            new_code_cell("%resguard_top -n 100000 --by memory --all"),
        ],
        metadata={
            "kernelspec": {"name": kernel_name, "language": "python", "display_name": "Python 3"}
        },
    )
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    with hostile_process() as child:
        client.execute()
    outputs = [
        output["data"]["text/html"]
        for output in notebook.cells[1].outputs
        if "text/html" in output.get("data", {})
    ]
    assert len(outputs) == 1
    parsed = read_table(outputs[0])
    assert parsed.header[-1] == "command"
    assert "b" not in parsed.tags
    assert row_of(parsed, child.pid)["command"] == expected_command()
    shown_all = [
        read_table(output["data"]["text/html"])
        for output in notebook.cells[2].outputs
        if "text/html" in output.get("data", {})
    ]
    assert len(shown_all) == 1
    kernel_threads = kernel_thread_pids()
    pids = {int(row[0]) for row in parsed.rows}
    all_pids = {int(row[0]) for row in shown_all[0].rows}
    assert not pids & kernel_threads  # hidden by default
    if kernel_threads:  # none are visible in a PID namespace
        assert all_pids & kernel_threads  # --all shows them
        assert row_of(shown_all[0], min(all_pids & kernel_threads))["command"].startswith("[")


def kernel_thread_pids() -> set[int]:
    """The pids of kthreadd and its children that map no memory, read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if int(entry.name) == 2 or (ppid == 2 and int(statm[1]) == 0):
            found.add(int(entry.name))
    return found
