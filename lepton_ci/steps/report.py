"""The report step: one markdown document for the PR with metric diff, gate verdict, version, deployment.

Everything is read from the records the other steps wrote; any of them may be absent (a team that uses
only `gate` + `report` gets a report of just that). The view model is built here so the jinja2 template
only lays it out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lepton_ci.charts import history_charts
from lepton_ci.config import Config
from lepton_ci.errors import UserError
from lepton_ci.metrics import fmt_number
from lepton_ci.records import Deployment, GateRecord, ImageRecord, ModelVersion, RunRecord, image_record_path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
REPORT_MODE = 0o600


def write_report(path: Path, text: str) -> None:
    """Write the report atomically, readable by its owner only, with every registered secret masked.

    0600 because the report is assembled from records a training run influenced and may be written on a
    shared runner; the job summary and the PR comment are where it is meant to be read. Every writer of
    report.md (`lepton-ci report -o`, `lepton-ci run`) should go through here.
    """
    from lepton_ci.forge.http import mask_secrets
    from lepton_ci.fsutil import atomic_write_bytes

    atomic_write_bytes(path, mask_secrets(text).encode("utf-8"))  # its temp file is created 0600 (mkstemp)
    os.chmod(path, REPORT_MODE)  # and stays so even if the atomic writer's mode ever changes


def _read_optional(cls: Any, path: Path | None) -> Any:
    return cls.read(path) if path is not None and path.is_file() else None


def _mapping(value: Any) -> dict[str, Any]:
    """An optional object field of a record: itself when it is one, else empty."""
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    """An optional text field of a record: itself when it is a string, else None (not shown)."""
    return value if isinstance(value, str) else None


def _change(candidate: float | None, baseline: float | None, direction: str | None, precision: int) -> tuple[str, str]:
    """Change text and arrow; the arrow is coloured only when a gate rule says which direction is better."""
    if candidate is None or baseline is None:
        return "—", "🆕" if baseline is None and candidate is not None else "—"
    delta = candidate - baseline
    if delta == 0:
        return "0", "="
    pct = f" ({delta / abs(baseline) * 100:+.2f}%)" if baseline else ""
    arrow = "▲" if delta > 0 else "▼"
    if direction is not None:
        arrow += " 🟢" if (delta > 0) == (direction == "higher") else " 🔴"
    return f"{'+' if delta > 0 else ''}{fmt_number(delta, precision)}{pct}", arrow


def build_context(
    run: RunRecord | None,
    gate: GateRecord | None,
    version: ModelVersion | None,
    deployment: Deployment | None,
    model: str,
    precision: int,
    aliases: list[str],
) -> dict[str, Any]:
    if run is None and gate is None:
        raise UserError(
            "nothing to report: no run.json and no gate.json (run `lepton-ci train` and `lepton-ci gate` first)"
        )
    # GateRecord.from_dict has checked candidate.metrics, baseline.metrics and each result; what is read
    # here beyond that is optional and shown only when it has the expected type.
    candidate_metrics = _mapping(gate.candidate.get("metrics") if gate else None) or (run.metrics if run else {})
    baseline_metrics = _mapping(gate.baseline.get("metrics") if gate else None)
    directions = {r["metric"]: r.get("direction", "higher") for r in (gate.results if gate else [])}
    num = lambda x: "—" if x is None else fmt_number(x, precision)  # noqa: E731
    rows = []
    for metric in sorted(set(candidate_metrics) | set(baseline_metrics)):
        c, b = candidate_metrics.get(metric), baseline_metrics.get(metric)
        change, arrow = _change(c, b, directions.get(metric), precision)
        rows.append({"metric": metric, "candidate": num(c), "baseline": num(b), "change": change, "arrow": arrow})
    results = [
        {
            **r,
            "threshold": num(r.get("threshold")),
            "observed": num(r.get("observed")),
            "baseline": num(r.get("baseline")),
            "passed": r.get("passed") is True,
            "reason": str(r.get("reason", "")).replace("|", "\\|"),
        }
        for r in (gate.results if gate else [])
    ]
    notes: list[str] = []
    baseline_text = None
    if gate:
        base = gate.baseline
        if base.get("metrics") is not None and base.get("source") == "registry":
            baseline_text = f"`{base.get('ref')}` = v{base.get('version')} (`{str(base.get('digest', ''))[:19]}`)"
        else:  # the gate step's own `baseline` output, so the comment and the CI outputs say the same
            baseline_text = gate.baseline_outputs()["baseline"]
        if base.get("note"):
            notes.append(str(base["note"]))
    src = run or None
    from_gate = gate.candidate if gate else {}
    git = _mapping(src.git if src else from_gate.get("git"))
    sha = git.get("sha")
    candidate = {
        "run_id": src.run_id if src else _text(from_gate.get("run_id")),
        "git_sha": sha[:10] if isinstance(sha, str) else "",
        "git_ref": _text(git.get("ref")),
        "dirty": git.get("dirty") is True,
    }
    signature = None
    if gate:
        sig = gate.signature or {}
        if sig.get("alg") == "ecdsa-p256-sha256":
            oms = " and model files signed (OpenSSF model-signing)" if sig.get("model_signature") else ""
            signature = f"Gate record signed (ECDSA P-256, key {sig.get('key_id')}){oms}"
        else:
            signature = f"Gate record unsigned: {sig.get('reason', 'no signing key')}"
    verdict = gate.verdict if gate else None
    dep = None
    if deployment is not None:  # Deployment.from_dict: health entries are objects, previous an object or null
        dep = {
            "status": deployment.status,
            "target": deployment.target,
            "version": deployment.version,
            "endpoint": deployment.endpoint,
            "previous": (deployment.previous or {}).get("version"),
            "checks": [
                {"check": h.get("check"), "passed": h.get("passed"), "ms": h.get("ms")} for h in deployment.health
            ],
        }
    return {
        "model": model,
        "candidate": candidate,
        "baseline": baseline_text,
        "metric_rows": rows,
        "results": results,
        "passed_count": sum(1 for r in results if r["passed"]),
        "signature": signature,
        "verdict_icon": {"pass": "✅", "fail": "❌"}.get(verdict or "", "📊"),
        "verdict_text": {"pass": "passed", "fail": "failed"}.get(verdict or "", "not run"),
        "version": None
        if version is None
        else {"version": version.version, "digest": version.digest, "aliases": aliases},
        "deployment": dep,
        "notes": notes,
    }


def render(context: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
    )
    text = env.get_template("report.md.j2").render(**context)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip() + "\n"


def report(
    config: Config,
    *,
    run_path: Path | None = None,
    gate_path: Path | None = None,
    deployment_path: Path | None = None,
    include_version: bool = True,
) -> str:
    from lepton_ci.records import read_tagged_version
    from lepton_ci.registry import open_registry

    run = _read_optional(RunRecord, run_path or config.run_path)
    gate = _read_optional(GateRecord, gate_path or config.gate_path)
    deployment = _read_optional(Deployment, deployment_path or config.deployment_path)
    notes: list[str] = []
    if run is not None and not run.succeeded:
        notes.append(
            f"the last training run {run.run_id} {run.exit.get('status')} (exit code {run.exit.get('code')}); "
            f"see {run.exit.get('log')}"
        )
    if gate is not None and run is not None and gate.candidate.get("run_id") != run.run_id:
        notes.append(
            f"gate.json belongs to run {gate.candidate.get('run_id')}, not to run {run.run_id}: it is not shown"
        )
        gate = None
    version = read_tagged_version(config.root) if include_version else None
    if version is not None and run is not None and version.run and version.run.get("run_id") != run.run_id:
        version = None  # the last tag was of another run; do not present it as this one's
    aliases: list[str] = []
    charts: list[str] = []
    try:
        registry = open_registry(config.registry_url, config.root)
    except UserError:
        registry = None  # no registry yet: a first run, or gate + report only
    if registry is not None:
        all_aliases = registry.aliases(config.model_name)
        if version is not None:
            aliases = sorted(a for a, v in all_aliases.items() if v == version.version)
        candidate = dict(run.metrics if run else (gate.candidate.get("metrics") if gate else {}) or {})
        versions = [v for v in registry.versions(config.model_name) if version is None or v.version != version.version]
        charted = list(dict.fromkeys(r["metric"] for r in (config.section("gate").get("rules") or [])))
        charts = history_charts(charted or sorted(candidate)[:3], versions, candidate, all_aliases)
    precision = int(config.section("report").get("precision", 4))
    context = build_context(run, gate, version, deployment, config.model_name, precision, aliases)
    context["charts"] = charts
    from lepton_ci.steps.sweep import report_section

    context["sweep"] = report_section(run, precision)
    context["notes"] = notes + context["notes"]
    failed = _read_optional(Deployment, (deployment_path or config.deployment_path).with_name("deployment.failed.json"))
    context["slo"] = slo_context(deployment, failed)
    context["image"] = image_context(_read_optional(ImageRecord, image_record_path(config.root)), version)
    return render(context)


def image_context(record: ImageRecord | None, version: ModelVersion | None) -> dict[str, Any] | None:
    """The serving image `build` made of the reported version (.lepton/image.json); None when there is no
    such record, or it is of another version (a stale file must not be shown as this version's image)."""
    if record is None or version is None or record.model.get("digest") != version.digest:
        return None
    from lepton_ci.registry.shared import human_size

    how = "model-only rebuild" if record.mode == "model-only" else "full build"
    sizes = (
        f"{human_size(record.size_bytes)}, {human_size(record.pushed_bytes)} pushed" if record.pushed else "not pushed"
    )
    return {"ref": record.image, "how": how, "sizes": sizes, "tags": list(record.tags) if record.pushed else []}


def slo_context(deployment: Deployment | None, failed: Deployment | None) -> dict[str, Any] | None:
    """The SLO watch to show: of the last rollout, which is the failed one when it is newer than the
    deployment that serves (a rollback leaves deployment.json naming the version that kept serving)."""
    latest = deployment
    if failed is not None and (deployment is None or failed.created > deployment.created):
        latest = failed
    watch = latest.slo if latest is not None else None
    if not isinstance(watch, dict) or latest is None:
        return None
    bounds = _mapping(watch.get("bounds"))
    shown = []
    if bounds.get("max_error_rate") is not None:
        shown.append(f"error rate ≤ {float(bounds['max_error_rate']):.2%}")
    if bounds.get("max_p95_ms") is not None:
        shown.append(f"p95 ≤ {bounds['max_p95_ms']} ms")
    samples = [x for x in watch.get("samples") or [] if isinstance(x, dict)]
    return {
        "version": latest.version,
        "passed": bool(watch.get("passed")),
        "rolled_back": latest is failed,
        "reason": _text(watch.get("reason")),
        "source": _text(watch.get("source")),
        "window": watch.get("window"),
        "bounds": ", ".join(shown),
        "min_requests": bounds.get("min_requests"),
        "samples": [
            {
                "t": x.get("t"),
                "requests": x.get("requests", "–"),
                "errors": x.get("errors", "–"),
                "error_rate": "–" if x.get("error_rate") is None else f"{float(x['error_rate']):.2%}",
                "p95_ms": "–" if x.get("p95_ms") is None else x.get("p95_ms"),
                "verdict": x.get("verdict"),
            }
            for x in samples[-12:]
        ],
    }
