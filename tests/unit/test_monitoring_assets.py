"""docs/monitoring/: the alert rules and the scrape config pass the real `promtool`, every PromQL expression
of the Grafana dashboard parses (promtool checks them as recording rules) and names only metrics the model
server exports, and the rules cover what the docs promise (error rate, p95 latency, queue full / 503s, no
ready replicas)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "docs" / "monitoring"

# What lepton_ci/serve/metrics.py exports: name -> type. A histogram's series are NAME_bucket/_sum/_count,
# a counter's NAME_total.
EXPORTED = {
    "lepton_inference_requests": "counter",
    "lepton_inference_seconds": "histogram",
    "lepton_inference_queue_depth": "gauge",
    "lepton_inference_batch_size": "histogram",
    "lepton_inference_in_flight": "gauge",
    "lepton_model_info": "gauge",
}
SERIES = {
    series
    for name, kind in EXPORTED.items()
    for series in (
        [f"{name}_total"] if kind == "counter"
        else [f"{name}_bucket", f"{name}_sum", f"{name}_count"] if kind == "histogram"
        else [name]
    )
}
# Words of PromQL that look like identifiers: keywords, and functions/aggregations (always followed by "(").
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
            "inf", "nan"}


def promtool() -> str:
    found = os.environ.get("LEPTON_PROMTOOL") or shutil.which("promtool")
    if found:
        return found
    msg = "promtool is missing: scripts/test installs it (scripts/deps/60-prometheus.sh)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana variables replaced first)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        word, call = m.group(1), m.group(2)
        if not call and word.lower() not in KEYWORDS:
            names.add(word)
    return names


def dashboard_exprs() -> list[str]:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(re.sub(r"^label_values\((\w+),\s*\w+\)$", r"\1", var["definition"]))
    return exprs


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (model, le) (rate(a_bucket{model=~"$model",status=~"5.."}[$__rate_interval]))') \
        == {"a_bucket"}
    assert metric_names("histogram_quantile(0.95, x) / on (model) group_left(version) y > bool 0.5") == {"x", "y"}
    assert metric_names('count(up{job="j"}) unless count(up{pod_ready="true"} == 1)') == {"up"}


def test_dashboard_names_only_exported_metrics() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    used = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= SERIES, f"{expr}: not exported by the model server: {sorted(names - SERIES)}"
        used |= names
    # every exported metric is on the dashboard
    assert {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used} == set(EXPORTED)


def test_dashboard_shape() -> None:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dash["uid"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])


def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    """promtool parses each expression (as a recording rule), with Grafana's variables given values."""
    exprs = [e.replace("$__rate_interval", "5m").replace("$model", ".*") for e in dashboard_exprs()]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:expr_{i}", "expr": e}
                                                         for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_rules_pass_promtool_and_cover_the_slos() -> None:
    path = MONITORING / "alerts.yml"
    proc = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
    by_name = {r["alert"]: r["expr"] for r in rules}
    assert "lepton_inference_requests_total" in by_name["LeptonModelHighErrorRate"]
    assert "histogram_quantile(0.95" in by_name["LeptonModelHighLatencyP95"]
    assert 'status="503"' in by_name["LeptonModelQueueFull"]
    assert "pod_ready" in by_name["LeptonModelNoReadyReplicas"]
    for expr in by_name.values():
        assert metric_names(expr) <= SERIES | {"up"}, expr


def test_scrape_config_passes_promtool(tmp_path: Path) -> None:
    """`promtool check config`. Debian's promtool is built without Kubernetes service discovery: when it
    says so, the rest of the file (relabelling, rule files) is checked with the pod discovery swapped for
    an empty static list, so nothing else goes unchecked."""
    src = MONITORING / "prometheus.yml"
    proc = subprocess.run([promtool(), "check", "config", str(src)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 and "field kubernetes_sd_configs not found" in proc.stdout + proc.stderr:
        config = yaml.safe_load(src.read_text())
        for job in config["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": []}]
        shutil.copy(MONITORING / "alerts.yml", tmp_path / "alerts.yml")
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        proc = subprocess.run([promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(src.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    k8s = next(j for j in config["scrape_configs"] if j["job_name"] == "lepton-model-server")
    assert k8s["kubernetes_sd_configs"] == [{"role": "pod"}]


def test_scrape_config_matches_the_rendered_pods() -> None:
    """The pod annotations and labels the kubernetes target renders are the ones the scrape config keeps."""
    from lepton_ci.deploy import manifests
    from tests.unit.test_kubernetes_manifests import IMAGE, spec

    pod = manifests.render(spec(), IMAGE)[0].obj["spec"]["template"]["metadata"]
    text = (MONITORING / "prometheus.yml").read_text()
    assert pod["annotations"]["prometheus.io/scrape"] == "true" and "prometheus_io_scrape" in text
    assert pod["labels"]["app.kubernetes.io/managed-by"] == "lepton-ci" and "regex: lepton-ci" in text
    assert pod["annotations"]["prometheus.io/port"] == "8080"


def test_deps_script_exports_promtool() -> None:
    script = ROOT / "scripts" / "deps" / "60-prometheus.sh"
    proc = subprocess.run(["bash", "-c", f'set -euo pipefail; ROOT=. VENV=.venv; source "{script}"; '
                           'echo "${LEPTON_PROMTOOL:-}"'], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    if shutil.which("promtool"):
        assert proc.stdout.strip() == shutil.which("promtool")
