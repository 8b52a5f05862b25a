"""The gate step: compare a candidate run with a baseline under the configured rules, sign the verdict.

Baselines: a registry alias (default `production`), `git:REF` (the metrics files at that revision),
a path to a run.json, or `none`. Fail closed: only a positive answer from the registry (it was read, and
it holds no such model or alias: `NotFound`) makes a first run; an unreachable, damaged or foreign
registry fails the gate (exit 2), because "no baseline" would pass every change rule. An alias the user
named explicitly must exist.

The verdict is signed with the gate's private key, together with an OpenSSF model-signing signature over
the candidate's files (read back and checked against run.json first, so the gate blesses the bytes it
was shown).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lepton_ci import signing
from lepton_ci.config import Config
from lepton_ci.errors import NotFound, UserError
from lepton_ci.fsutil import sha256_file, short_repr
from lepton_ci.gate_rules import evaluate
from lepton_ci.gitio import read_files_at
from lepton_ci.metrics import parse_metrics
from lepton_ci.records import GateRecord, ModelVersion, RunRecord, artifacts_digest, validate_metrics
from lepton_ci.registry import open_registry
from lepton_ci.timeutil import utcnow

DEFAULT_BASELINE = "production"


def resolve_baseline(config: Config, spec: str, *, explicit: bool) -> dict[str, Any]:
    """Return {source, ref, version?, digest?, metrics (or None when there is no baseline), note?}."""
    if spec == "none":
        return {"source": "none", "ref": None, "metrics": None, "note": "baseline disabled"}
    if spec.startswith("git:"):
        ref = spec[4:]
        files = config.section("train").get("metrics") or []
        if not files:
            raise UserError("baseline git:REF needs train.metrics files in lepton.yml", where=config.where("train"))
        contents = read_files_at(ref, [config.resolve(f) for f in files], config.root)
        metrics: dict[str, Any] = {}
        missing = []
        notes: list[str] = []
        files = list(dict.fromkeys(files))  # a file named twice is read once, as `train` does
        for rel in files:
            blob = contents[config.resolve(rel)]
            if blob is None:
                missing.append(rel)
            else:
                parsed = parse_metrics(blob, f"{ref}:{rel}")
                metrics.update(parsed.values)
                notes.extend(parsed.notes)
        if missing:
            notes.insert(0, f"missing at {ref}: {', '.join(missing)}")
        note = "; ".join(notes) or None
        return {"source": "git", "ref": ref, "metrics": metrics if len(missing) < len(files) else None, "note": note}
    as_path = config.resolve(spec)
    if spec.endswith(".json") or as_path.is_file():
        run = RunRecord.read(as_path)
        return {"source": "run", "ref": str(spec), "run_id": run.run_id, "metrics": run.metrics}
    try:
        registry = open_registry(config.registry_url, config.root)
        mv = registry.get(config.model_name, spec)
    except NotFound as exc:  # the registry answered: nothing there (first run); any other error propagates
        if explicit:
            raise
        why = exc.message.split(" (")[0]
        note = f"no baseline for {short_repr(spec)} yet: {why}"
        return {"source": "registry", "ref": spec, "metrics": None, "note": note}
    return {
        "source": "registry",
        "ref": spec,
        "version": mv.version,
        "digest": mv.digest,
        "metrics": registry_baseline_metrics(mv),
    }


def registry_baseline_metrics(mv: ModelVersion) -> dict[str, Any]:
    """The metrics a registry version was tagged with, checked like a record's: a version whose run record
    holds something a gate cannot compare fails the gate (exit 2) instead of passing it as "no baseline
    value". A version tagged without a run record has no metrics (the change rules then say so)."""
    where = f"{mv.name} v{mv.version} in the registry"
    run = mv.metadata.get("run")
    if run is None:
        return {}
    if not isinstance(run, dict):
        raise UserError("metadata.run of the baseline version must be a run record (an object)", where=where)
    metrics = run.get("metrics", {})
    validate_metrics(metrics, where, "baseline metrics (metadata.run.metrics)")
    return dict(metrics)


@contextlib.contextmanager
def staged_candidate(config: Config, run: RunRecord, run_path: Path) -> Iterator[Path]:
    """The candidate's files, laid out as the registry will hold them, each checked against run.json:
    what gets signed is exactly what was measured. Hard links where possible (no copy of a big model)."""
    tmp = Path(tempfile.mkdtemp(prefix="lepton-gate-"))
    try:
        for art in run.artifacts:
            src = config.resolve(art["path"])
            if not src.is_file():
                raise UserError(f"artifact {art['path']} recorded in {run_path} no longer exists")
            dest = tmp / art["path"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
            if sha256_file(dest) != art["sha256"]:
                raise UserError(f"artifact {art['path']} changed after training (sha256 differs from {run_path})")
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def gate(
    config: Config, *, run_path: Path | None = None, baseline: str | None = None, output: Path | None = None
) -> GateRecord:
    section = config.section("gate")
    run_path = run_path or config.run_path
    run = RunRecord.read(run_path)
    if not run.succeeded:
        raise UserError(f"the run in {run_path} did not succeed ({str(run.exit.get('status'))[:80]}); nothing to gate")
    if run.model and run.model != config.model_name:
        raise UserError(
            f"{run_path} is a run of model {short_repr(run.model)}, but lepton.yml names {config.model_name!r}"
        )
    spec = baseline or section.get("baseline") or DEFAULT_BASELINE
    base = resolve_baseline(config, spec, explicit=baseline is not None)
    rules = section.get("rules") or []
    metric_files = ", ".join(config.section("train").get("metrics") or []) or "no metrics files configured"
    results = evaluate(
        rules,
        run.metrics,
        base["metrics"],
        f"{run_path.name}; metrics files: {metric_files}",
        section.get("first_run", "pass"),
    )
    record = GateRecord(
        model=config.model_name,
        candidate={
            "run_id": run.run_id,
            "digest": artifacts_digest(run.artifacts) if run.artifacts else "",
            "git": run.git,
            "metrics": run.metrics,
            # what the server will load, and how: signed with the rest, so the registry cannot swap them
            "model_file": config.model_file,
            "framework": config.framework,
        },
        baseline=base,
        results=results,
        verdict="pass" if all(r["passed"] for r in results) else "fail",
        created=utcnow(),
    )
    private = signing.load_private_key()
    if private is not None and run.artifacts:
        with staged_candidate(config, run, run_path) as files:
            signing.sign(record, private, files)
    else:
        signing.sign(record, private)
    record.write(output or config.gate_path)
    return record
