"""Gate rule semantics, exactly as DESIGN.md states them.

- `min` / `max`: value bounds on the candidate.
- `direction`: `higher` (default) or `lower` is better.
- `max_drop` (absolute) and `max_drop_pct` (relative: (candidate − baseline) / |baseline| × 100) bound
  the change against the baseline in the worse direction. Baseline 0 with a relative rule: "undefined",
  fails unless `zero_baseline: pass`.
- No baseline: change rules report "no baseline" and pass (unless `first_run: fail`); value rules apply.
- A metric named in a rule but missing from the candidate fails, naming the metric and the file.
"""

from __future__ import annotations

import math
from typing import Any

VALUE_RULES = ("min", "max")
CHANGE_RULES = ("max_drop", "max_drop_pct")


def _at_most(value: float, limit: float) -> bool:
    """Inclusive bound on a computed change. 0.90 - 0.88 is 0.020000000000000018 in binary floating point:
    a user who wrote `max_drop: 0.02` means that drop to pass, so rounding noise is absorbed."""
    return value <= limit or math.isclose(value, limit, rel_tol=1e-9, abs_tol=1e-12)


def _result(
    metric: str,
    rule: str,
    threshold: Any,
    observed: Any,
    baseline: Any,
    delta: Any,
    passed: bool,
    reason: str,
    direction: str,
) -> dict[str, Any]:
    return {
        "metric": metric,
        "rule": rule,
        "threshold": threshold,
        "direction": direction,
        "observed": observed,
        "baseline": baseline,
        "delta": delta,
        "passed": passed,
        "reason": reason,
    }


def evaluate_rule(
    rule: dict[str, Any],
    candidate: dict[str, Any],
    baseline: dict[str, Any] | None,
    candidate_source: str,
    first_run: str = "pass",
) -> list[dict[str, Any]]:
    """One result per constraint in the rule (a rule with min and max_drop yields two)."""
    metric = rule["metric"]
    direction = rule.get("direction", "higher")
    kinds = [k for k in VALUE_RULES + CHANGE_RULES if k in rule]
    observed = candidate.get(metric)
    base = None if baseline is None else baseline.get(metric)
    if observed is None:
        return [
            _result(
                metric,
                k,
                rule[k],
                None,
                base,
                None,
                False,
                f"metric {metric!r} is missing from the candidate ({candidate_source})",
                direction,
            )
            for k in kinds
        ]
    delta = None if base is None else observed - base
    return [
        _result(
            metric,
            kind,
            rule[kind],
            observed,
            base,
            delta,
            *_verdict(kind, rule, observed, base, delta, baseline is not None, direction, first_run),
            direction,
        )
        for kind in kinds
    ]


def _verdict(
    kind: str,
    rule: dict[str, Any],
    observed: Any,
    base: Any,
    delta: Any,
    has_baseline: bool,
    direction: str,
    first_run: str,
) -> tuple[bool, str]:
    """(passed, reason) of one constraint of a rule on a metric the candidate has."""
    t = rule[kind]
    if kind == "min":
        ok = observed >= t
        return ok, f"{observed:g} {'>=' if ok else '<'} min {t:g}"
    if kind == "max":
        ok = observed <= t
        return ok, f"{observed:g} {'<=' if ok else '>'} max {t:g}"
    if not has_baseline:
        ok = first_run == "pass"
        return ok, "no baseline (first run)" + ("" if ok else "; gate.first_run is fail")
    if base is None or delta is None:  # delta is None exactly when base is
        return True, f"no baseline value for {rule['metric']!r}"
    worse = -delta if direction == "higher" else delta  # > 0 means the candidate got worse
    if kind == "max_drop":
        ok = _at_most(worse, t)
        what = f"drop {worse:g}" if worse > 0 else f"gain {-worse:g}" if worse < 0 else "no change"
        return ok, f"{what} {'<=' if ok else '>'} max_drop {t:g}" if worse > 0 else what
    if base == 0:
        return rule.get("zero_baseline", "fail") == "pass", "relative change undefined (baseline is 0)"
    pct = delta / abs(base) * 100.0
    worse_pct = -pct if direction == "higher" else pct
    ok = _at_most(worse_pct, t)
    what = f"drop {worse_pct:.3g}%" if worse_pct > 0 else f"gain {-worse_pct:.3g}%" if worse_pct < 0 else "no change"
    return ok, f"{what} {'<=' if ok else '>'} max_drop_pct {t:g}%" if worse_pct > 0 else what


def evaluate(
    rules: list[dict[str, Any]],
    candidate: dict[str, Any],
    baseline: dict[str, Any] | None,
    candidate_source: str,
    first_run: str = "pass",
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for rule in rules:
        results.extend(evaluate_rule(rule, candidate, baseline, candidate_source, first_run))
    return results
