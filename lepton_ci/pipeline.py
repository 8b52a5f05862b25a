"""`lepton-ci run`: the configured steps in order, with the report written even when a step fails.

A failed gate, build or deploy stops what follows it (nothing unblessed moves forward) but the report
still renders, because a failing pull request is exactly when the metric diff matters. A failed training
run ends the pipeline (there is nothing to report on), and a usage error (bad config, missing file)
ends it with exit code 2 like any single step would.

`build` runs when it is named (`steps:` in lepton.yml, `--steps`), and by default when lepton.yml sets
`build.image`; the deploy after it runs the image it built (deploy reads .lepton/image.json).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lepton_ci.config import Config
from lepton_ci.errors import StepFailed, UserError

ORDER = ["train", "gate", "tag", "build", "deploy", "report"]


@dataclass
class PipelineResult:
    steps: dict[str, str] = field(default_factory=dict)  # step -> ok | failed | skipped
    report: str | None = None
    failure: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)  # what the CI step exposes (version, verdict, ...)


def default_steps(config: Config) -> list[str]:
    """lepton.yml's `steps`, else every step but `build`, which joins when `build.image` (or
    LEPTON_CI_BUILD_IMAGE) names where to push."""
    if config.data.get("steps"):
        return config.steps
    wanted = config.steps
    has_image = config.section("build").get("image") or os.environ.get("LEPTON_CI_BUILD_IMAGE")
    if has_image and "build" not in wanted:
        wanted.append("build")
    return wanted


def run_pipeline(
    config: Config,
    *,
    steps: list[str] | None = None,
    param_overrides: dict[str, Any] | None = None,
    allow_unblessed: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> PipelineResult:
    from lepton_ci.steps import deploy as deploy_step
    from lepton_ci.steps.gate import gate
    from lepton_ci.steps.report import report
    from lepton_ci.steps.tag import tag
    from lepton_ci.steps.train import train

    wanted = steps or default_steps(config)
    unknown = [s for s in wanted if s not in ORDER]
    if unknown:
        raise UserError(f"unknown step(s) {', '.join(unknown)} (expected: {', '.join(ORDER)})")
    result = PipelineResult()
    blocked = False
    for step in [s for s in ORDER if s in wanted]:
        if blocked and step in ("tag", "build", "deploy"):
            result.steps[step] = "skipped"
            log(f"- {step}: skipped (gate failed)")
            continue
        log(f"▶ {step}")
        try:
            if step == "train":
                run = train(config, param_overrides=param_overrides, to_stderr=True)
                log(f"  run {run.run_id}: {len(run.metrics)} metric(s), {len(run.artifacts)} artifact(s)")
                result.outputs["run-id"] = run.run_id
            elif step == "gate":
                g = gate(config)
                result.outputs["verdict"] = g.verdict
                compared = g.baseline_outputs()
                result.outputs.update(compared)
                log(f"  baseline: {compared['baseline']}")
                for r in g.results:
                    log(f"  {'✔' if r['passed'] else '✘'} {r['metric']} {r['rule']}: {r['reason']}")
                if not g.passed:
                    blocked = True
                    result.failure = "gate failed: " + ", ".join(
                        f"{r['metric']} {r['rule']}" for r in g.results if not r["passed"]
                    )
                    result.steps[step] = "failed"
                    continue
            elif step == "tag":
                pushed = tag(config)
                result.outputs.update(version=pushed.version.version, digest=pushed.version.digest)
                log(f"  {pushed.version.name} v{pushed.version.version} ({pushed.version.digest[:19]})")
            elif step == "build":
                from lepton_ci.steps.build import build

                image = build(config, progress="auto")
                result.outputs.update(image=image.image, **{"image-digest": image.digest, "build-mode": image.mode})
                log(f"  {image.image} ({image.mode}, {image.pushed_bytes:,} bytes pushed)")
            elif step == "deploy":
                d = deploy_step.deploy(config, allow_unblessed=allow_unblessed)
                result.outputs.update(endpoint=d.endpoint, **{"deployed-version": d.version})
                log(f"  v{d.version} {d.status} at {d.endpoint}")
            elif step == "report":
                from lepton_ci.forge.http import mask_secrets
                from lepton_ci.steps.report import write_report

                result.report = mask_secrets(report(config))
                write_report(config.report_path, result.report)
                log(f"  written to {config.report_path}")
        except StepFailed as exc:
            result.steps[step] = "failed"
            result.failure = result.failure or f"{step}: {exc}"
            log(f"  ✘ {exc}")
            if step == "train":
                break
            blocked = True
            continue
        result.steps[step] = "ok"
    return result
