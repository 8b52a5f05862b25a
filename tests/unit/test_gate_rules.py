"""lepton_ci/gate_rules.py, checked against the "Gate semantics" section of DESIGN.md."""

from __future__ import annotations

import pytest

from lepton_ci.gate_rules import evaluate, evaluate_rule

SOURCE = "run.json; metrics files: metrics.json"


def one(rule, candidate, baseline, first_run="pass"):
    [result] = evaluate_rule(rule, candidate, baseline, SOURCE, first_run)
    return result


# --- value rules: min / max --------------------------------------------------------------------------


@pytest.mark.parametrize("value, passed", [(0.89, False), (0.9, True), (0.95, True)])
def test_min(value, passed):
    r = one({"metric": "acc", "min": 0.9}, {"acc": value}, None)
    assert r["passed"] is passed
    assert (r["rule"], r["threshold"], r["observed"]) == ("min", 0.9, value)
    assert r["reason"] == f"{value:g} {'>=' if passed else '<'} min 0.9"


@pytest.mark.parametrize("value, passed", [(0.2, True), (0.25, True), (0.2501, False)])
def test_max(value, passed):
    r = one({"metric": "loss", "max": 0.25}, {"loss": value}, None)
    assert r["passed"] is passed
    assert r["rule"] == "max"


def test_value_rules_ignore_direction_and_baseline():
    # min/max bound the candidate's value; direction only matters for change rules.
    r = one({"metric": "loss", "direction": "lower", "min": 0.1}, {"loss": 0.05}, {"loss": 0.5})
    assert r["passed"] is False
    r = one({"metric": "acc", "max": 1.0}, {"acc": 0.2}, {"acc": 0.9})
    assert r["passed"] is True


def test_one_result_per_constraint_in_rule_order():
    results = evaluate_rule({"metric": "acc", "max_drop_pct": 5, "min": 0.5, "max": 1, "max_drop": 0.1},
                            {"acc": 0.8}, {"acc": 0.82}, SOURCE)
    assert [r["rule"] for r in results] == ["min", "max", "max_drop", "max_drop_pct"]
    assert all(r["passed"] for r in results)
    assert all(r["metric"] == "acc" for r in results)


# --- direction and max_drop (absolute) -----------------------------------------------------------------


@pytest.mark.parametrize("direction, baseline, candidate, passed", [
    ("higher", 0.9, 0.85, False),   # dropped 0.05 > 0.02
    ("higher", 0.9, 0.89, True),    # dropped 0.01
    ("higher", 0.5, 0.9, True),     # a big gain never fails
    ("lower", 0.5, 0.55, False),    # loss went up 0.05: worse
    ("lower", 0.5, 0.51, True),     # loss went up 0.01
    ("lower", 0.5, 0.1, True),      # loss went down a lot: better
])
def test_max_drop_in_the_worse_direction(direction, baseline, candidate, passed):
    r = one({"metric": "m", "direction": direction, "max_drop": 0.02}, {"m": candidate}, {"m": baseline})
    assert r["passed"] is passed
    assert r["baseline"] == baseline
    assert r["delta"] == pytest.approx(candidate - baseline)
    assert r["direction"] == direction


def test_direction_defaults_to_higher():
    r = one({"metric": "m", "max_drop": 0.1}, {"m": 1.0}, {"m": 2.0})
    assert r["direction"] == "higher"
    assert r["passed"] is False
    assert r["reason"] == "drop 1 > max_drop 0.1"


def test_gain_never_fails_even_with_zero_allowed_drop():
    r = one({"metric": "m", "max_drop": 0}, {"m": 100.0}, {"m": 1.0})
    assert r["passed"] is True
    assert r["reason"] == "gain 99"
    r = one({"metric": "m", "direction": "lower", "max_drop": 0}, {"m": 1.0}, {"m": 100.0})
    assert r["passed"] is True


def test_no_change_passes_zero_allowed_drop():
    r = one({"metric": "m", "max_drop": 0}, {"m": 0.7}, {"m": 0.7})
    assert r["passed"] is True
    assert r["reason"] == "no change"


@pytest.mark.parametrize("direction, baseline, candidate", [
    ("higher", 0.75, 0.5),   # exact binary fractions: drop == 0.25
    ("lower", 0.5, 0.75),
    ("higher", 10, 7),
])
def test_max_drop_exactly_at_threshold_passes(direction, baseline, candidate):
    threshold = abs(candidate - baseline)
    r = one({"metric": "m", "direction": direction, "max_drop": threshold}, {"m": candidate}, {"m": baseline})
    assert r["passed"] is True


@pytest.mark.parametrize("baseline, candidate, max_drop", [
    (0.90, 0.88, 0.02),     # 0.90 - 0.88 is 0.020000000000000018 in floating point
    (0.93, 0.92, 0.01),
    (0.3, 0.2, 0.1),
])
def test_max_drop_exactly_at_a_decimal_threshold_passes(baseline, candidate, max_drop):
    # A user writing `max_drop: 0.02` for 0.90 -> 0.88 reads "drop 0.02 > max_drop 0.02" as a fail
    # at exactly the threshold; DESIGN says the bound is inclusive.
    r = one({"metric": "acc", "max_drop": max_drop}, {"acc": candidate}, {"acc": baseline})
    assert r["passed"] is True, r["reason"]


# --- max_drop_pct (relative) -------------------------------------------------------------------------


@pytest.mark.parametrize("direction, baseline, candidate, limit, passed", [
    ("higher", 0.8, 0.76, 4, False),   # -5%
    ("higher", 0.8, 0.78, 4, True),    # -2.5%
    ("higher", 0.8, 0.9, 0, True),     # gain
    ("lower", 2.0, 2.2, 5, False),     # +10% loss is worse
    ("lower", 2.0, 2.05, 5, True),     # +2.5%
    ("lower", 2.0, 1.0, 0, True),      # -50% loss is better
])
def test_max_drop_pct(direction, baseline, candidate, limit, passed):
    r = one({"metric": "m", "direction": direction, "max_drop_pct": limit}, {"m": candidate}, {"m": baseline})
    assert r["passed"] is passed
    assert r["rule"] == "max_drop_pct"


def test_max_drop_pct_reason_states_the_relative_drop():
    r = one({"metric": "m", "max_drop_pct": 4}, {"m": 0.76}, {"m": 0.8})
    assert r["reason"] == "drop 5% > max_drop_pct 4%"
    r = one({"metric": "m", "max_drop_pct": 4}, {"m": 0.88}, {"m": 0.8})
    assert r["reason"] == "gain 10%"


@pytest.mark.parametrize("direction, baseline, candidate, passed", [
    # (candidate - baseline) / |baseline| * 100 with baseline -10:
    ("higher", -10.0, -11.0, True),   # -10%: at the 10% limit
    ("higher", -10.0, -12.0, False),  # -20%: worse than -10 for higher-is-better
    ("higher", -10.0, -5.0, True),    # +50%: better
    ("lower", -10.0, -12.0, True),    # -20%: lower is better, so a gain
    ("lower", -10.0, -8.0, False),    # +20%: worse for lower-is-better
    ("lower", -10.0, -9.0, True),     # +10%: at the limit
])
def test_max_drop_pct_with_a_negative_baseline(direction, baseline, candidate, passed):
    r = one({"metric": "m", "direction": direction, "max_drop_pct": 10}, {"m": candidate}, {"m": baseline})
    assert r["passed"] is passed, r["reason"]
    assert r["delta"] == pytest.approx(candidate - baseline)


@pytest.mark.parametrize("baseline, candidate, limit", [(0.5, 0.375, 25), (4.0, 3.0, 25), (-8.0, -10.0, 25)])
def test_max_drop_pct_exactly_at_threshold_passes(baseline, candidate, limit):
    r = one({"metric": "m", "max_drop_pct": limit}, {"m": candidate}, {"m": baseline})
    assert r["passed"] is True


@pytest.mark.parametrize("baseline, candidate, limit", [(0.5, 0.485, 3), (0.8, 0.792, 1)])
def test_max_drop_pct_exactly_at_a_decimal_threshold_passes(baseline, candidate, limit):
    r = one({"metric": "m", "max_drop_pct": limit}, {"m": candidate}, {"m": baseline})
    assert r["passed"] is True, r["reason"]


@pytest.mark.parametrize("candidate", [0.0, 0.5, -0.5])
def test_zero_baseline_relative_rule_is_undefined_and_fails(candidate):
    r = one({"metric": "m", "max_drop_pct": 5}, {"m": candidate}, {"m": 0})
    assert r["passed"] is False
    assert "undefined" in r["reason"]


def test_zero_baseline_passes_when_configured():
    r = one({"metric": "m", "max_drop_pct": 5, "zero_baseline": "pass"}, {"m": -3.0}, {"m": 0.0})
    assert r["passed"] is True
    assert "undefined" in r["reason"]
    r = one({"metric": "m", "max_drop_pct": 5, "zero_baseline": "fail"}, {"m": 3.0}, {"m": 0.0})
    assert r["passed"] is False


def test_zero_baseline_does_not_affect_absolute_rule():
    r = one({"metric": "m", "max_drop": 0.1}, {"m": -0.05}, {"m": 0})
    assert r["passed"] is True
    r = one({"metric": "m", "max_drop": 0.1}, {"m": -0.5}, {"m": 0})
    assert r["passed"] is False


# --- no baseline / first run -------------------------------------------------------------------------


def test_no_baseline_change_rules_pass_and_value_rules_apply():
    results = evaluate_rule({"metric": "acc", "min": 0.9, "max_drop": 0.01, "max_drop_pct": 1},
                            {"acc": 0.85}, None, SOURCE)
    by = {r["rule"]: r for r in results}
    assert by["min"]["passed"] is False
    for kind in ("max_drop", "max_drop_pct"):
        assert by[kind]["passed"] is True
        assert "no baseline" in by[kind]["reason"]
        assert by[kind]["baseline"] is None and by[kind]["delta"] is None


def test_first_run_fail_fails_change_rules_only():
    results = evaluate_rule({"metric": "acc", "min": 0.5, "max_drop": 0.01}, {"acc": 0.85}, None, SOURCE,
                            first_run="fail")
    by = {r["rule"]: r for r in results}
    assert by["min"]["passed"] is True
    assert by["max_drop"]["passed"] is False
    assert "no baseline" in by["max_drop"]["reason"]
    assert "first_run" in by["max_drop"]["reason"]


def test_baseline_without_that_metric_passes_change_rules():
    r = one({"metric": "new_metric", "max_drop": 0.01}, {"new_metric": 0.1}, {"acc": 0.9})
    assert r["passed"] is True
    assert "no baseline" in r["reason"] and "new_metric" in r["reason"]


# --- missing candidate metric ----------------------------------------------------------------------


@pytest.mark.parametrize("baseline", [None, {"eval.f1": 0.9}])
def test_metric_missing_from_candidate_fails_naming_metric_and_file(baseline):
    results = evaluate_rule({"metric": "eval.f1", "min": 0.1, "max_drop_pct": 50}, {"eval.acc": 0.9},
                            baseline, SOURCE)
    assert len(results) == 2
    for r in results:
        assert r["passed"] is False
        assert r["observed"] is None
        assert "'eval.f1'" in r["reason"]
        assert "metrics.json" in r["reason"]
        assert "missing" in r["reason"]


def test_missing_metric_fails_even_on_first_run_pass():
    r = one({"metric": "x", "max_drop": 1}, {}, None, first_run="pass")
    assert r["passed"] is False


# --- evaluate over several rules -----------------------------------------------------------------


def test_evaluate_concatenates_results_of_all_rules():
    rules = [
        {"metric": "eval.accuracy", "min": 0.9, "max_drop": 0.02},
        {"metric": "eval.f1_macro", "max_drop_pct": 3},
        {"metric": "eval.log_loss", "direction": "lower", "max_drop_pct": 50},
    ]
    candidate = {"eval.accuracy": 0.95, "eval.f1_macro": 0.80, "eval.log_loss": 0.3}
    baseline = {"eval.accuracy": 0.96, "eval.f1_macro": 0.85, "eval.log_loss": 0.25}
    results = evaluate(rules, candidate, baseline, SOURCE)
    assert [(r["metric"], r["rule"], r["passed"]) for r in results] == [
        ("eval.accuracy", "min", True),
        ("eval.accuracy", "max_drop", True),
        ("eval.f1_macro", "max_drop_pct", False),   # -5.9%
        ("eval.log_loss", "max_drop_pct", True),    # +20% loss, under 50
    ]
    assert evaluate([], candidate, baseline, SOURCE) == []


def test_result_has_every_field_the_gate_record_needs():
    r = one({"metric": "m", "max_drop": 0.5}, {"m": 1.0}, {"m": 1.25})
    assert set(r) >= {"metric", "rule", "threshold", "observed", "baseline", "delta", "passed", "reason"}
    assert r["delta"] == -0.25
