"""The operator's pages agree with deploy/ and with what resguard exports.

docs/prometheus.md, docs/deploy.md and the assistant tutorial show manifests, queries and
code that an operator pastes: an HPA on a metric no adapter rule serves, a KEDA query on a
label no series carries, probes that differ from the shipped Deployment's, ``uvicorn
--workers 4`` (each scrape answered by another worker's registry), a code block that uses a
name only a hidden block defines. Each check reads the pages and deploy/ as they are.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from resguard.prometheus import DEPRECATED, METRICS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
RULES_FILE = DEPLOY / "prometheus" / "resguard-rules.yml"
ADAPTER_VALUES = KUBE / "prometheus-adapter" / "values.yaml"
#: The pages whose manifests and queries are deploy/'s story.
OPERATOR_PAGES = [
    DOCS / "prometheus.md",
    DOCS / "deploy.md",
    DOCS / "tutorials" / "assistant-server.md",
]
ALL_PAGES = sorted(DOCS.rglob("*.md"))

#: Labels a scrape puts on every series (static configs, kubernetes-pods annotations, the
#: Prometheus Operator's ServiceMonitor), and those kube-state-metrics' series carry.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "service", "endpoint"}
KUBE_STATE_LABELS = {"namespace", "pod", "container", "reason", "uid"}


def fenced(page: Path, language: str) -> list[str]:
    """The ```language blocks of *page*, in order."""
    pattern = rf"^```{language}\n(.*?)^```"
    return re.findall(pattern, page.read_text(), re.MULTILINE | re.DOTALL)


def yaml_docs(page: Path) -> Iterator[Any]:
    for block in fenced(page, "yaml"):
        yield from (doc for doc in yaml.safe_load_all(block) if doc is not None)


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair anywhere in a parsed YAML document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def adapter_metrics() -> dict[str, str]:
    """prometheus-adapter's custom metric name -> the series its rule is built on."""
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    return {
        rule["name"]["as"]: re.findall(r"resguard_\w+", rule["seriesQuery"])[0]
        for rule in values["rules"]["custom"]
    }


def documented_labels() -> set[str]:
    """The label names docs/prometheus.md's metrics table gives resguard's series."""
    labels: set[str] = set()
    for row in re.findall(
        r"^\| `resguard_\w+` \| \w+ \| ([^|]*) \|",
        (DOCS / "prometheus.md").read_text(),
        re.MULTILINE,
    ):
        labels |= set(re.findall(r"`(\w+)`", row))
    return labels


def queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query deploy/ ships or an operator page shows."""
    for path in (RULES_FILE, KUBE / "prometheus-operator" / "prometheusrule.yaml"):
        for key, value in walk(yaml.safe_load(path.read_text())):
            if key == "expr":
                yield str(path.relative_to(ROOT)), value
    for key, value in walk(yaml.safe_load(ADAPTER_VALUES.read_text())):
        if key in ("seriesQuery", "metricsQuery"):
            yield str(ADAPTER_VALUES.relative_to(ROOT)), value
    for page in OPERATOR_PAGES:
        for doc in yaml_docs(page):
            for key, value in walk(doc):
                if key in ("query", "expr"):
                    yield str(page.relative_to(ROOT)), value


def label_names(query: str) -> set[str]:
    """The label names a PromQL query matches on or groups by (templates left out)."""
    names: set[str] = set()
    for selector in re.findall(r"\{([^{}]*)\}", query):
        names |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector))
    for grouping in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", query):
        names |= set(re.findall(r"\b\w+\b", grouping.replace("<<.GroupBy>>", "")))
    return names


def test_every_query_selects_only_labels_its_series_carry() -> None:
    carried = TARGET_LABELS | KUBE_STATE_LABELS | documented_labels()
    assert {"guard", "reason", "cache"} <= carried
    found = list(queries())
    assert any("keda" in where or "prometheus.md" in where for where, _ in found)
    wrong = {(where, query): label_names(query) - carried for where, query in found}
    assert {key: names for key, names in wrong.items() if names} == {}


def test_the_label_check_refuses_a_pod_label_the_series_do_not_carry() -> None:
    carried = TARGET_LABELS | documented_labels()
    assert label_names('avg(resguard_memory_used_ratio{app="api"})') - carried == {"app"}
    assert label_names("sum by (pod) (rate(x[2m]))") == {"pod"}


def hpas() -> Iterator[tuple[str, dict[str, Any]]]:
    for page in OPERATOR_PAGES:
        for doc in yaml_docs(page):
            if isinstance(doc, dict) and doc.get("kind") == "HorizontalPodAutoscaler":
                yield str(page.relative_to(ROOT)), doc
    yield "deploy/kubernetes/hpa.yaml", yaml.safe_load((KUBE / "hpa.yaml").read_text())


def test_every_hpa_shown_or_shipped_scales_on_a_metric_the_adapter_serves() -> None:
    served = set(adapter_metrics())
    shown = list(hpas())
    assert len(shown) >= 2  # the shipped one and the memory one of prometheus.md
    for where, hpa in shown:
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                assert metric["pods"]["metric"]["name"] in served, where


def test_an_adapter_metric_on_psi_is_named_for_the_psi_line_it_reads() -> None:
    """PSI "some" is resguard's *_waiting_*, "full" its *_stalled_*: a ratio built on one
    does not carry the other's name."""
    words = {"waiting": "waiting", "stalled": "stall"}
    psi = {
        name: series
        for name, series in adapter_metrics().items()
        if re.fullmatch(r"resguard_pressure_\w+_(waiting|stalled)_seconds_total", series)
    }
    assert psi
    for name, series in psi.items():
        line = re.fullmatch(r"resguard_pressure_\w+_(waiting|stalled)_seconds_total", series)
        assert line
        assert words[line.group(1)] in name, (name, series)
        other = words["stalled" if line.group(1) == "waiting" else "waiting"]
        assert other not in name, (name, series)


def test_every_resguard_name_the_operator_pages_and_deploy_use_exists() -> None:
    exported = set(METRICS) | set(DEPRECATED)
    exported |= {name + suffix for name in METRICS for suffix in ("_bucket", "_sum", "_count")}
    known = exported | set(adapter_metrics())
    texts = {str(page.relative_to(ROOT)): page.read_text() for page in OPERATOR_PAGES}
    texts |= {str(path.relative_to(ROOT)): path.read_text() for path in DEPLOY.rglob("*.y*ml")}
    unknown = {
        where: names
        for where, text in texts.items()
        if (names := set(re.findall(r"\bresguard_[a-z0-9_]*[a-z0-9]\b", text)) - known)
    }
    assert unknown == {}


def test_what_ships_a_psi_figure_says_it_is_the_nodes_on_cgroup_v1() -> None:
    """On cgroup v1 /proc/pressure is node-wide: every manifest that alerts or scales on
    a PSI series says so, and so do the pages that describe them."""
    shipped = [RULES_FILE, KUBE / "prometheus-operator" / "prometheusrule.yaml"]
    shipped += [ADAPTER_VALUES, KUBE / "hpa.yaml", *OPERATOR_PAGES[:2]]
    for path in shipped:
        text = path.read_text()
        uses_psi = re.search(
            r"resguard_pressure_\w+_seconds_total|resguard_memory_waiting_ratio", text
        )
        assert uses_psi, path
        assert "cgroup v1" in text, path


def probes(value: Any) -> dict[str, Any]:
    return {key: item for key, item in walk(value) if key in ("readinessProbe", "livenessProbe")}


def test_every_probe_a_page_shows_is_the_shipped_deployments() -> None:
    shipped = probes(yaml.safe_load((KUBE / "deployment.yaml").read_text()))
    assert set(shipped) == {"readinessProbe", "livenessProbe"}
    shown = 0
    for page in ALL_PAGES:
        for doc in yaml_docs(page):
            for key, probe in probes(doc).items():
                shown += 1
                assert probe == shipped[key], (page, key)
    assert shown >= 2


WORKERS = re.compile(r"--workers[ =](\d+)")


def test_no_page_or_manifest_runs_uvicorn_with_more_than_one_worker() -> None:
    """Several workers behind one port answer each scrape from another registry: the
    counters flap. The pages scale with replicas (or a metrics port per worker)."""
    texts = {page: page.read_text() for page in ALL_PAGES}
    texts |= {path: path.read_text() for path in DEPLOY.rglob("*.y*ml")}
    texts[ROOT / "README.md"] = (ROOT / "README.md").read_text()
    many = {
        str(path): found
        for path, text in texts.items()
        if (found := [n for n in WORKERS.findall(text) if int(n) > 1])
    }
    assert many == {}
    assert WORKERS.findall("run `uvicorn --workers 4`") == ["4"]


def unbound_names(source: str) -> set[str]:
    """Names *source* reads that it never binds (nor are builtins)."""
    tree = ast.parse(source)
    bound: set[str] = set(dir(builtins))
    read: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return read - bound


def test_the_operator_pages_visible_code_defines_every_name_it_uses() -> None:
    """A reader pastes the visible blocks, not the hidden setup the page's own test runs:
    every name the visible code uses is defined in visible code."""
    pages = [page for page in OPERATOR_PAGES if fenced(page, "python")]
    assert DOCS / "prometheus.md" in pages
    for page in pages:
        assert unbound_names("\n".join(fenced(page, "python"))) == set(), page
    assert unbound_names("register(models=[pool])") == {"register", "pool"}
