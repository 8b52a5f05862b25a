"""The SLO watch's arithmetic (lepton_ci/deploy/slo.py) without servers: p95 from bucket deltas as PromQL's
histogram_quantile computes it, error rates from counter deltas (with a reset), min_requests, fail-closed
reads, and the settings' cross-field checks. The watch against real servers is
tests/integration/test_deploy_slo.py."""

from __future__ import annotations

import math

import pytest

from lepton_ci.deploy import slo
from lepton_ci.errors import UserError

INF = math.inf


def test_p95_interpolates_inside_the_bucket() -> None:
    # 100 observations: 90 at or below 0.1 s, 100 at or below 0.5 s -> rank 95 is halfway through (0.1, 0.5].
    assert slo.p95_ms({0.1: 90, 0.5: 100, INF: 100}) == pytest.approx(300.0)
    assert slo.p95_ms({0.1: 0, INF: 10}) == 100.0  # in the +Inf bucket: the highest finite bound
    assert slo.p95_ms({0.1: 0, INF: 0}) is None


def test_counts_since_subtracts_and_survives_a_reset() -> None:
    base = slo.Counts({"200": 100, "500": 5}, {0.1: 100, INF: 105})
    now = slo.Counts({"200": 150, "500": 2}, {0.1: 130, INF: 152})  # the 500 series was reset
    d = now.since(base)
    assert d.by_status == {"200": 50, "500": 2} and d.buckets == {0.1: 30, INF: 47}


class FakeSource:
    def __init__(self, readings: list[slo.Counts | Exception]) -> None:
        self.readings = readings

    def describe(self) -> str:
        return "fake"

    def read(self) -> slo.Counts:
        r = self.readings.pop(0)
        if isinstance(r, Exception):
            raise r
        return r


def _c(ok: int, err: int, fast: int | None = None) -> slo.Counts:
    total = ok + err
    return slo.Counts({"200": ok, "500": err}, {0.05: total if fast is None else fast, INF: total})


def _watch(s: slo.Settings, readings: list) -> dict:
    clock = iter(range(0, 1000))
    return slo.watch(s, FakeSource(readings), sleep=lambda _: None, clock=lambda: float(next(clock)))


def test_breach_on_error_rate_stops_the_watch() -> None:
    s = slo.Settings(window=10, interval=1, max_error_rate=0.05, min_requests=20)
    out = _watch(s, [_c(0, 0), _c(10, 1), _c(40, 5), _c(100, 5)])
    assert out["passed"] is False and "error rate" in out["reason"]
    assert [x["verdict"] for x in out["samples"]] == ["no verdict", "breach"]


def test_breach_on_p95() -> None:
    s = slo.Settings(window=10, interval=1, max_error_rate=None, max_p95_ms=40, min_requests=10)
    out = _watch(s, [_c(0, 0), _c(100, 0, fast=50)])
    assert out["passed"] is False and "p95" in out["reason"]


def test_quiet_window_passes_without_verdict_and_unreadable_source_fails_closed() -> None:
    s = slo.Settings(window=3, interval=1, min_requests=20)
    out = _watch(s, [_c(0, 0), _c(1, 0), _c(2, 0), _c(3, 0), _c(3, 0)])
    assert out["passed"] is True and "no verdict" in out["reason"]
    out = _watch(s, [_c(0, 0), slo.SourceError("gone")])
    assert out["passed"] is False and "gone" in out["reason"]


def test_settings_refuse_what_the_schema_cannot() -> None:
    assert slo.settings({}) is None
    with pytest.raises(UserError, match="interval"):
        slo.settings({"slo": {"window": 5, "interval": 10}})
    with pytest.raises(UserError, match="no bound"):
        slo.settings({"slo": {"max_error_rate": None}})


def test_prometheus_matchers_quote_values() -> None:
    src = slo.PrometheusSource("http://p:9090/", "m", 3, "lepton", {"cluster": 'eu"1'})
    assert src.matchers == 'cluster="eu\\"1",job="lepton",model="m",version="3"'
