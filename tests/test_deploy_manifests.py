"""deploy/kubernetes: valid Kubernetes objects that agree with the code they deploy.

Core-API objects (Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler) are
validated by the ``kubernetes`` client's models, which are the Kubernetes OpenAPI schema
as pydantic classes: strict types, required fields, unknown fields refused; a round trip
through the model also refuses Python-style field names (``container_port``) that the
models accept but the API server does not. Custom resources (ServiceMonitor,
PrometheusRule) and prometheus-adapter's rules are checked against a small hand schema of
the fields their CRDs and the adapter's config define that these manifests use
(:data:`CRD_SCHEMAS`, :data:`ADAPTER_SCHEMA`). Every PromQL expression goes through
``promtool check rules``; probe paths, ports and metric names are checked against
resguard's own constants, so renaming one of them breaks this test.
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pydantic
import pytest
import yaml
from kubernetes.client import models as k8s

from resguard.asgi import GuardMiddleware
from resguard.guard import Guard
from resguard.prometheus import METRICS, ResguardCollector, with_metrics
from resguard.testing import StaticMonitor

from plugins.integration import unavailable

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
RULES_FILE = ROOT / "deploy" / "prometheus" / "resguard-rules.yml"
ADAPTER_VALUES = KUBE / "prometheus-adapter" / "values.yaml"

#: (apiVersion, kind) -> the client's model of that object.
CORE_MODELS: dict[tuple[str, str], type[pydantic.BaseModel]] = {
    ("apps/v1", "Deployment"): k8s.V1Deployment,
    ("v1", "Service"): k8s.V1Service,
    ("policy/v1", "PodDisruptionBudget"): k8s.V1PodDisruptionBudget,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.V2HorizontalPodAutoscaler,
}


def load_all(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of *path* (a manifest file may hold several)."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{path} holds no document"
    return docs


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """Every object under deploy/kubernetes (the adapter's Helm values are no object)."""
    found = []
    for path in sorted(KUBE.rglob("*.yaml")):
        if path == ADAPTER_VALUES:
            continue
        for doc in load_all(path):
            found.append((f"{path.relative_to(KUBE)}:{doc.get('kind')}", doc))
    return found


def by_kind(kind: str) -> dict[str, Any]:
    """The one object of *kind* the deploy folder ships."""
    (doc,) = [doc for _, doc in manifests() if doc["kind"] == kind]
    return doc


# -- core objects: the client's OpenAPI models --------------------------------------------


def _differences(given: Any, dumped: Any, where: str) -> Iterator[str]:
    """Where *given* is not what the model made of it (a renamed key, a coerced value)."""
    if isinstance(given, Mapping) and isinstance(dumped, Mapping):
        for key in given:
            if key not in dumped:
                yield f"{where}.{key}: not a field of the API (a Python name, or dropped)"
            else:
                yield from _differences(given[key], dumped[key], f"{where}.{key}")
    elif isinstance(given, list) and isinstance(dumped, list) and len(given) == len(dumped):
        for index, (one, other) in enumerate(zip(given, dumped, strict=True)):
            yield from _differences(one, other, f"{where}[{index}]")
    elif given != dumped or type(given) is not type(dumped):
        yield f"{where}: {given!r} became {dumped!r}"


def core_errors(doc: Mapping[str, Any]) -> list[str]:
    """What makes *doc* an invalid core-API object (``[]`` when it is valid)."""
    model = CORE_MODELS.get((doc.get("apiVersion", ""), doc.get("kind", "")))
    if model is None:
        return [f"no model for apiVersion={doc.get('apiVersion')!r} kind={doc.get('kind')!r}"]
    try:
        obj = model.model_validate(doc)
    except pydantic.ValidationError as error:
        return [
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        ]
    dumped = obj.model_dump(by_alias=True, exclude_none=True, mode="json")
    return list(_differences(doc, dumped, "$"))


CORE = [(name, doc) for name, doc in manifests() if (doc["apiVersion"], doc["kind"]) in CORE_MODELS]


@pytest.mark.parametrize(("name", "doc"), CORE, ids=[name for name, _ in CORE])
def test_core_manifest_validates_against_the_kubernetes_models(
    name: str, doc: dict[str, Any]
) -> None:
    assert core_errors(doc) == [], name


def test_every_manifest_is_checked_by_a_model_or_a_hand_schema() -> None:
    kinds = {doc["kind"] for _, doc in manifests()}
    checked = {kind for _, kind in CORE_MODELS} | set(CRD_SCHEMAS)
    assert kinds <= checked
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PrometheusRule"} <= kinds


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    return container


BREAKAGES: dict[str, Callable[[dict[str, Any]], object]] = {
    "unknown field": lambda d: _container(d).update(memoryLimit="1Gi"),
    "wrong type": lambda d: _container(d)["ports"][0].update(containerPort="8000"),
    "missing required": lambda d: _container(d)["readinessProbe"]["httpGet"].pop("port"),
    "python name": lambda d: _container(d).update(
        readiness_probe=_container(d).pop("readinessProbe")
    ),
    "int annotation": lambda d: d["spec"]["template"]["metadata"]["annotations"].update(
        {"prometheus.io/port": 8000}
    ),
    "wrong apiVersion": lambda d: d.update(apiVersion="extensions/v1beta1"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_core_validator_refuses_a_broken_deployment(breakage: str) -> None:
    doc = by_kind("Deployment")
    assert core_errors(doc) == []
    BREAKAGES[breakage](doc)
    assert core_errors(doc) != []


# -- custom resources and the adapter's config: a hand schema -----------------------------

#: monitoring.coreos.com's Duration pattern (``for``, ``interval``, ``keep_firing_for``).
DURATION = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)


class Obj:
    """An object with these *required* and *optional* fields (no others)."""

    def __init__(self, required: Mapping[str, Any] = {}, optional: Mapping[str, Any] = {}):
        self.required = dict(required)
        self.optional = dict(optional)


class ListOf:
    """A list of *item*."""

    def __init__(self, item: Any) -> None:
        self.item = item


class MapOf:
    """A string-keyed map of *value*."""

    def __init__(self, value: Any) -> None:
        self.value = value


Duration = "duration"
Meta = "ObjectMeta"
Selector = "LabelSelector"


def schema_errors(value: Any, schema: Any, where: str = "$") -> Iterator[str]:
    """Where *value* breaks *schema* (Obj, ListOf, MapOf, a type, Duration, Meta, Selector)."""
    if schema in (Meta, Selector):
        model = k8s.V1ObjectMeta if schema == Meta else k8s.V1LabelSelector
        try:
            dumped = model.model_validate(value).model_dump(by_alias=True, exclude_none=True)
        except pydantic.ValidationError as error:
            yield f"{where}: {error}"
            return
        yield from _differences(value, dumped, where)
    elif schema == Duration:
        if not (isinstance(value, str) and DURATION.match(value)):
            yield f"{where}: {value!r} is no duration"
    elif isinstance(schema, Obj):
        if not isinstance(value, Mapping):
            yield f"{where}: {value!r} is not an object"
            return
        for key in schema.required.keys() - value.keys():
            yield f"{where}.{key}: required"
        for key, item in value.items():
            field = schema.required.get(key, schema.optional.get(key))
            if field is None:
                yield f"{where}.{key}: unknown field"
            else:
                yield from schema_errors(item, field, f"{where}.{key}")
    elif isinstance(schema, ListOf):
        if not isinstance(value, list):
            yield f"{where}: {value!r} is not a list"
            return
        for index, item in enumerate(value):
            yield from schema_errors(item, schema.item, f"{where}[{index}]")
    elif isinstance(schema, MapOf):
        if not isinstance(value, Mapping):
            yield f"{where}: {value!r} is not a map"
            return
        for key, item in value.items():
            if not isinstance(key, str):
                yield f"{where}: key {key!r} is not a string"
            yield from schema_errors(item, schema.value, f"{where}.{key}")
    elif not isinstance(value, schema) or (schema is int and isinstance(value, bool)):
        yield f"{where}: {value!r} is not a {schema.__name__}"


#: A Prometheus rule as monitoring.coreos.com/v1's PrometheusRule CRD defines it (the same
#: fields as a Prometheus rules file).
RULE = Obj(
    {"expr": str},
    {
        "alert": str,
        "record": str,
        "for": Duration,
        "keep_firing_for": Duration,
        "labels": MapOf(str),
        "annotations": MapOf(str),
    },
)
GROUP = Obj(
    {"name": str, "rules": ListOf(RULE)},
    {"interval": Duration, "limit": int, "query_offset": Duration, "labels": MapOf(str)},
)
#: kind -> (apiVersion, the fields of its CRD that these manifests may use).
CRD_SCHEMAS: dict[str, tuple[str, Obj]] = {
    "PrometheusRule": (
        "monitoring.coreos.com/v1",
        Obj(
            {
                "apiVersion": str,
                "kind": str,
                "metadata": Meta,
                "spec": Obj({"groups": ListOf(GROUP)}),
            }
        ),
    ),
    "ServiceMonitor": (
        "monitoring.coreos.com/v1",
        Obj(
            {
                "apiVersion": str,
                "kind": str,
                "metadata": Meta,
                "spec": Obj(
                    {
                        "selector": Selector,
                        "endpoints": ListOf(
                            Obj(
                                {},
                                {
                                    "port": str,
                                    "path": str,
                                    "scheme": str,
                                    "interval": Duration,
                                    "scrapeTimeout": Duration,
                                    "honorLabels": bool,
                                },
                            )
                        ),
                    },
                    {
                        "jobLabel": str,
                        "namespaceSelector": Obj({}, {"any": bool, "matchNames": ListOf(str)}),
                    },
                ),
            }
        ),
    ),
}
#: prometheus-adapter's Helm values: its Prometheus and its custom-metrics rules (the
#: adapter's config format: seriesQuery, resources, name, metricsQuery).
ADAPTER_RULE = Obj(
    {
        "seriesQuery": str,
        "metricsQuery": str,
        "resources": Obj(
            {},
            {
                "overrides": MapOf(Obj({"resource": str}, {"group": str})),
                "template": str,
            },
        ),
    },
    {
        "seriesFilters": ListOf(Obj({}, {"is": str, "isNot": str})),
        "name": Obj({}, {"matches": str, "as": str}),
    },
)
ADAPTER_SCHEMA = Obj(
    {
        "prometheus": Obj({"url": str}, {"port": int, "path": str}),
        "rules": Obj({"custom": ListOf(ADAPTER_RULE)}, {"default": bool}),
    }
)


CUSTOM = [(name, doc) for name, doc in manifests() if doc["kind"] in CRD_SCHEMAS]


@pytest.mark.parametrize(("name", "doc"), CUSTOM, ids=[name for name, _ in CUSTOM])
def test_custom_resource_has_only_the_fields_its_crd_defines(
    name: str, doc: dict[str, Any]
) -> None:
    api_version, schema = CRD_SCHEMAS[doc["kind"]]
    assert doc["apiVersion"] == api_version
    assert list(schema_errors(doc, schema)) == [], name
    for group in doc["spec"].get("groups", ()):
        for rule in group["rules"]:  # a rule records or alerts, and only an alert waits
            assert ("alert" in rule) != ("record" in rule), rule
            assert "for" not in rule or "alert" in rule, rule


def test_the_adapter_values_have_only_the_fields_its_config_defines() -> None:
    (values,) = load_all(ADAPTER_VALUES)
    assert list(schema_errors(values, ADAPTER_SCHEMA)) == []


def test_the_hand_schema_refuses_unknown_missing_and_mistyped_fields() -> None:
    rule = by_kind("PrometheusRule")
    first = rule["spec"]["groups"][0]["rules"][0]
    first["severity"] = "page"  # belongs under labels
    first["for"] = "5 minutes"
    del rule["spec"]["groups"][0]["name"]
    errors = list(schema_errors(rule, CRD_SCHEMAS["PrometheusRule"][1]))
    assert any(".severity: unknown field" in e for e in errors)
    assert any(".for: '5 minutes' is no duration" in e for e in errors)
    assert any(".name: required" in e for e in errors)


# -- the rules: B's file, promtool, resguard's metric names -------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS`` (Debian's prometheus package; .ci/run installs it)."""
    if shutil.which("promtool") is None:
        unavailable("promtool is not installed (apt-get install prometheus)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_the_prometheus_rule_wraps_exactly_the_shipped_rules_file() -> None:
    (shipped,) = load_all(RULES_FILE)
    assert by_kind("PrometheusRule")["spec"]["groups"] == shipped["groups"]


def test_the_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": by_kind("PrometheusRule")["spec"]["groups"]}))
    done = promtool("check", "rules", str(rules))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_prometheus_rule_fires_on_pressure_shedding_and_oom_kills() -> None:
    alerts = [
        rule
        for group in by_kind("PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    exprs = {rule["alert"]: rule["expr"] for rule in alerts}
    assert any("resguard_pressure" in e or "resguard_memory" in e for e in exprs.values())
    assert any("resguard_guard_refused_total" in e for e in exprs.values())
    assert any("resguard_oom_kills_total" in e for e in exprs.values())
    pressure = [r for r in alerts if "Pressure" in r["alert"]]
    assert pressure
    assert all(r.get("for") == "5m" for r in pressure)


def adapter_rules() -> list[dict[str, Any]]:
    (values,) = load_all(ADAPTER_VALUES)
    rules: list[dict[str, Any]] = values["rules"]["custom"]
    return rules


def rendered(query: str) -> str:
    """An adapter query with its template filled in as the adapter does when the HPA asks
    for the pods ``busy`` and ``idle`` of namespace ``default``."""
    return (
        query.replace("<<.LabelMatchers>>", 'namespace="default",pod=~"busy|idle"')
        .replace("<<.GroupBy>>", "pod")
        .replace("<<.Series>>", "resguard_series")
    )


def test_the_adapter_queries_are_promql(tmp_path: Path) -> None:
    records = [
        {"record": f"adapter:{index}:{part}", "expr": rendered(rule[part])}
        for index, rule in enumerate(adapter_rules())
        for part in ("seriesQuery", "metricsQuery")
    ]
    rules = tmp_path / "adapter.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": records}]}))
    done = promtool("check", "rules", str(rules))
    assert done.returncode == 0, done.stdout + done.stderr


#: Series of two pods scraped every 15 s for 10 min: ``busy`` admits 3 and refuses 1
#: request a second, holds 3 in flight and 2 queued, waits for memory 10 % of the time and
#: uses 75 % of its limit; ``idle`` has every counter flat at 0 and uses 10 %.
SERIES = {
    'resguard_guard_admitted_total{guard="api"}': ("0+45x40", "0x40"),
    'resguard_guard_refused_total{guard="api",reason="memory"}': ("0+15x40", "0x40"),
    'resguard_guard_refused_total{guard="api",reason="timeout"}': ("0x40", "0x40"),
    'resguard_guard_in_flight{guard="api"}': ("3x40", "0x40"),
    'resguard_guard_waiting{guard="api"}': ("2x40", "0x40"),
    "resguard_pressure_memory_waiting_seconds_total": ("0+1.5x40", "0x40"),
    "resguard_memory_used_ratio": ("0.75x40", "0.1x40"),
}
#: What each custom metric must be for (busy, idle): what the HPA's targets are set against.
EXPECTED = {
    "resguard_guard_concurrency": (5, 0),
    "resguard_shed_ratio": (0.25, 0),  # 0 when idle, not NaN (0 / 0)
    "resguard_memory_waiting_ratio": (0.1, 0),
    "resguard_memory_used_ratio": (0.75, 0.1),
}


def test_the_adapter_metrics_compute_what_the_hpa_targets(tmp_path: Path) -> None:
    inputs = []
    for series, values in SERIES.items():
        name, _, labels = series.partition("{")
        labels = labels.rstrip("}")
        for pod, value in zip(("busy", "idle"), values, strict=True):
            pod_labels = f'namespace="default",pod="{pod}"' + (f",{labels}" if labels else "")
            inputs.append({"series": f"{name}{{{pod_labels}}}", "values": value})
    queries = {rule["name"]["as"]: rendered(rule["metricsQuery"]) for rule in adapter_rules()}
    assert set(queries) == set(EXPECTED)
    checks = [
        {
            "expr": queries[metric],
            "eval_time": "5m",
            "exp_samples": [
                {"labels": f'{{pod="{pod}"}}', "value": value}
                for pod, value in zip(("busy", "idle"), EXPECTED[metric], strict=True)
            ],
        }
        for metric in sorted(EXPECTED)
    ]
    (tmp_path / "none.yml").write_text("groups: []\n")
    test = {
        "rule_files": ["none.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "15s", "input_series": inputs, "promql_expr_test": checks}],
    }
    (tmp_path / "adapter.test.yml").write_text(yaml.safe_dump(test))
    done = promtool("test", "rules", str(tmp_path / "adapter.test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_hpa_scales_on_the_metrics_the_adapter_defines() -> None:
    hpa = by_kind("HorizontalPodAutoscaler")
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    defined = {rule["name"]["as"] for rule in adapter_rules()}
    assert wanted
    assert wanted <= defined
    for rule in adapter_rules():
        assert re.fullmatch(
            rule["name"]["matches"], re.findall(r"resguard_\w+", rule["seriesQuery"])[0]
        )
    deployment = by_kind("Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }


def exported_names() -> set[str]:
    """Every sample name resguard's collector can expose (a histogram's three series)."""
    names = set(METRICS)
    for name in METRICS:
        names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def test_every_series_the_manifests_query_is_one_resguard_exports() -> None:
    texts = [
        rule["expr"]
        for group in by_kind("PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
    ]
    texts += [rule[part] for rule in adapter_rules() for part in ("seriesQuery", "metricsQuery")]
    queried = {name for text in texts for name in re.findall(r"\bresguard_[a-z0-9_]+", text)}
    assert queried, "no resguard series queried"
    assert queried <= exported_names(), queried - exported_names()


# -- probes, ports and paths against the code ---------------------------------------------


def default(parameter: str) -> Any:
    return inspect.signature(GuardMiddleware).parameters[parameter].default


def test_probes_use_the_middlewares_paths_on_the_served_port() -> None:
    deployment = by_kind("Deployment")
    container = _container(deployment)
    (port,) = container["ports"]
    command = container["command"]
    assert command[command.index("--port") + 1] == str(port["containerPort"])
    ready = container["readinessProbe"]["httpGet"]
    alive = container["livenessProbe"]["httpGet"]
    assert ready == {"path": default("readiness_path"), "port": port["name"]}
    assert alive["port"] == port["name"]
    assert alive["path"] in default("liveness_paths")
    assert alive["path"] != ready["path"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert (
        annotations["prometheus.io/path"]
        == inspect.signature(with_metrics).parameters["path"].default
    )


def test_the_service_monitor_and_budget_select_the_deployments_pods() -> None:
    deployment, service = by_kind("Deployment"), by_kind("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert (
        by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    )
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == _container(deployment)["ports"][0]["name"]
    monitor = by_kind("ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == port["name"]
    path = deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
    assert endpoint["path"] == path


def test_the_probed_paths_answer_as_the_manifest_expects_under_pressure() -> None:
    """At 97 % readiness is 503, liveness 200 and /metrics serves what the adapter reads."""
    container = _container(by_kind("Deployment"))
    ready = container["readinessProbe"]["httpGet"]["path"]
    alive = container["livenessProbe"]["httpGet"]["path"]
    metrics = by_kind("ServiceMonitor")["spec"]["endpoints"][0]["path"]
    monitor = StaticMonitor(memory_percent=97)
    guard = Guard(memory="90%", monitor=monitor, name="api")

    async def hello(scope: Any, receive: Any, send: Any) -> None:
        status = 200 if scope["path"] == "/" else 404  # the probes are not the app's
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    collector = ResguardCollector(monitor, guards=[guard])
    app = with_metrics(GuardMiddleware(hello, guard), collector, path=metrics)

    async def probe() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pod") as client:
            return {path: await client.get(path) for path in (ready, alive, metrics, "/")}

    answers = anyio.run(probe)
    assert answers[ready].status_code == 503
    assert answers[ready].json()["ready"] is False  # readiness said it, not a refusal
    assert int(answers[ready].headers["retry-after"]) >= 1
    assert answers[alive].status_code == 200
    assert answers["/"].status_code == 503  # the guard sheds the request itself
    assert answers[metrics].status_code == 200
    for rule in adapter_rules():
        series = re.findall(r"resguard_\w+", rule["seriesQuery"])[0]
        assert re.search(rf"^{series}[{{ ]", answers[metrics].text, re.MULTILINE), series


def test_the_how_to_lists_every_shipped_manifest() -> None:
    page = (ROOT / "docs" / "deploy.md").read_text()
    shipped = {f"deploy/kubernetes/{path.relative_to(KUBE)}" for path in KUBE.rglob("*.yaml")}
    assert shipped
    assert {name for name in shipped if f"`{name}`" not in page} == set()
