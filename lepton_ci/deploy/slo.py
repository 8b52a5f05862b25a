"""SLO-guarded rollout: watch a new version under real traffic and say whether it kept its bounds.

Target-neutral: a target moves traffic to the new version, calls `watch()` with a source of the new
version's numbers, and rolls back when the answer is a breach. The numbers are the model server's own
(docs/serving.md): the counter `lepton_inference_requests_total{model,version,status}` and the histogram
`lepton_inference_seconds` of the new version. Both are cumulative, so the watch reads them once before
traffic moves (the baseline) and then every `interval`: the error rate and the p95 latency are computed
from the difference to the baseline, which is exactly the traffic the new version took during the watch
(the smoke request before it does not count). The source is either the server's `/metrics` (scraped
directly, not through a router) or a Prometheus server queried with PromQL (`deploy.slo.prometheus`):
the same counters, summed by status and by bucket bound, so both sources go through one computation.

Fail closed: a source that cannot be read (the new server died, Prometheus is down) is a breach, never
"no data". Below `min_requests` there is no verdict on rate or latency (a handful of requests proves
nothing either way), and a watch that ends there passes, saying so.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lepton_ci.errors import UserError

REQUESTS = "lepton_inference_requests_total"
LATENCY_BUCKET = "lepton_inference_seconds_bucket"
READ_TIMEOUT_S = 5.0


@dataclass
class Settings:
    """`deploy.slo` with defaults filled in (the schema has checked the types and ranges)."""

    window: float = 60.0
    interval: float = 5.0
    max_error_rate: float | None = 0.01
    max_p95_ms: float | None = None
    min_requests: int = 20
    prometheus: str | None = None
    job: str | None = None
    selector: dict[str, str] = field(default_factory=dict)

    def bounds(self) -> dict[str, Any]:
        return {"max_error_rate": self.max_error_rate, "max_p95_ms": self.max_p95_ms, "min_requests": self.min_requests}


def settings(options: dict[str, Any]) -> Settings | None:
    """The watch asked for by the deploy section, or None when `deploy.slo` is not set."""
    raw = options.get("slo")
    if not raw:
        return None
    s = Settings(
        window=float(raw.get("window", 60)),
        interval=float(raw.get("interval", 5)),
        max_error_rate=raw.get("max_error_rate", 0.01),
        max_p95_ms=raw.get("max_p95_ms"),
        min_requests=int(raw.get("min_requests", 20)),
        prometheus=raw.get("prometheus"),
        job=raw.get("job"),
        selector=dict(raw.get("selector") or {}),
    )
    if s.interval > s.window:
        raise UserError(f"deploy.slo.interval ({s.interval:g}s) is longer than deploy.slo.window ({s.window:g}s)")
    if s.max_error_rate is None and s.max_p95_ms is None:
        raise UserError("deploy.slo sets no bound: give max_error_rate, max_p95_ms or both")
    return s


@dataclass
class Counts:
    """Cumulative numbers of one version at one moment: requests by HTTP status, and latency observations
    at or below each bucket bound (seconds; +Inf included)."""

    by_status: dict[str, float] = field(default_factory=dict)
    buckets: dict[float, float] = field(default_factory=dict)

    def since(self, base: Counts) -> Counts:
        """What happened between `base` and now. A series that went down was reset (the server restarted):
        its whole current value is new."""

        def diff(now: dict[Any, float], then: dict[Any, float]) -> dict[Any, float]:
            return {k: (v - then.get(k, 0.0) if v >= then.get(k, 0.0) else v) for k, v in now.items()}

        return Counts(diff(self.by_status, base.by_status), diff(self.buckets, base.buckets))


class Source(Protocol):
    def read(self) -> Counts: ...

    def describe(self) -> str: ...


class SourceError(Exception):
    """The numbers could not be read: the watch treats it as a breach (fail closed)."""


class ScrapeSource:
    """The new server's own /metrics, parsed with prometheus_client's parser."""

    def __init__(self, url: str, model: str, version: int | str) -> None:
        self.url, self.model, self.version = url, model, str(version)

    def describe(self) -> str:
        return self.url

    def read(self) -> Counts:
        try:
            from prometheus_client.parser import text_string_to_metric_families
        except ImportError:
            raise UserError("deploy.slo needs prometheus_client: pip install 'lepton-ci[serve]'") from None
        try:
            with urllib.request.urlopen(self.url, timeout=READ_TIMEOUT_S) as resp:
                text = resp.read().decode("utf-8", errors="replace")
        except (OSError, urllib.error.URLError) as exc:
            raise SourceError(f"{self.url} could not be read: {exc}") from None
        counts = Counts()
        try:
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.labels.get("model") != self.model or s.labels.get("version") != self.version:
                        continue
                    if s.name == REQUESTS:
                        status = s.labels.get("status", "")
                        counts.by_status[status] = counts.by_status.get(status, 0.0) + s.value
                    elif s.name == LATENCY_BUCKET:
                        le = float(s.labels["le"])
                        counts.buckets[le] = counts.buckets.get(le, 0.0) + s.value
        except (ValueError, KeyError) as exc:
            raise SourceError(f"{self.url} is not Prometheus text: {exc}") from None
        return counts


def _label_value(value: str) -> str:
    """A PromQL string literal (double-quoted, backslash escapes)."""
    return json.dumps(value)


class PrometheusSource:
    """The same counters from a Prometheus server that scrapes the new version (instant queries)."""

    def __init__(self, base_url: str, model: str, version: int | str, job: str | None, selector: dict[str, str]):
        self.base_url = base_url.rstrip("/")
        labels = {**selector, **({"job": job} if job else {}), "model": model, "version": str(version)}
        self.matchers = ",".join(f"{k}={_label_value(v)}" for k, v in labels.items())

    def describe(self) -> str:
        return f"{self.base_url} ({{{self.matchers}}})"

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.base_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=READ_TIMEOUT_S) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise SourceError(f"Prometheus at {self.base_url} refused {promql!r}: HTTP {exc.code}") from None
        except (OSError, urllib.error.URLError, ValueError) as exc:
            raise SourceError(f"Prometheus at {self.base_url} could not be queried: {exc}") from None
        data = answer.get("data") if isinstance(answer, dict) else None
        if answer.get("status") != "success" or not isinstance(data, dict) or data.get("resultType") != "vector":
            raise SourceError(f"Prometheus at {self.base_url} answered {str(answer)[:200]} to {promql!r}")
        result = data.get("result")
        return result if isinstance(result, list) else []

    def read(self) -> Counts:
        counts = Counts()
        try:
            for row in self.query(f"sum by (status) ({REQUESTS}{{{self.matchers}}})"):
                counts.by_status[row["metric"].get("status", "")] = float(row["value"][1])
            for row in self.query(f"sum by (le) ({LATENCY_BUCKET}{{{self.matchers}}})"):
                counts.buckets[float(row["metric"]["le"])] = float(row["value"][1])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise SourceError(f"Prometheus at {self.base_url} answered an unexpected vector: {exc}") from None
        return counts


def source_for(s: Settings, metrics_url: str, model: str, version: int | str) -> Source:
    """Prometheus when `deploy.slo.prometheus` is set, else the new server's /metrics."""
    if s.prometheus:
        return PrometheusSource(s.prometheus, model, version, s.job, s.selector)
    return ScrapeSource(metrics_url, model, version)


def p95_ms(buckets: dict[float, float], q: float = 0.95) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated inside its bucket as PromQL's
    histogram_quantile does (a quantile in the +Inf bucket is the highest finite bound)."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]) or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return round(prev_bound * 1000, 3)
            width = count - prev_count
            fraction = (rank - prev_count) / width if width > 0 else 1.0
            return round((prev_bound + (bound - prev_bound) * fraction) * 1000, 3)
        prev_bound, prev_count = bound, count
    return None


def judge(delta: Counts, s: Settings, elapsed: float) -> dict[str, Any]:
    """One sample: the traffic since the watch began and whether it breaks a bound."""
    requests = sum(delta.by_status.values())
    errors = sum(v for k, v in delta.by_status.items() if k.startswith("5"))
    rate = errors / requests if requests else None
    p95 = p95_ms(delta.buckets)
    sample: dict[str, Any] = {
        "t": round(elapsed, 2),
        "requests": int(requests),
        "errors": int(errors),
        "error_rate": None if rate is None else round(rate, 4),
        "p95_ms": p95,
        "verdict": "ok",
    }
    if requests < s.min_requests:
        sample["verdict"] = "no verdict"
        return sample
    if s.max_error_rate is not None and rate is not None and rate > s.max_error_rate:
        sample["verdict"] = "breach"
        sample["reason"] = (
            f"error rate {rate:.2%} > max_error_rate {s.max_error_rate:.2%} ({int(errors)} of {int(requests)})"
        )
    elif s.max_p95_ms is not None and p95 is not None and p95 > s.max_p95_ms:
        sample["verdict"] = "breach"
        sample["reason"] = f"p95 latency {p95:g} ms > max_p95_ms {s.max_p95_ms:g} ms over {int(requests)} requests"
    return sample


def watch(
    s: Settings,
    source: Source,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    baseline: Counts | None = None,
) -> dict[str, Any]:
    """Watch for `s.window` seconds, a sample every `s.interval`; stop at the first breach. Returns what
    deployment.json records under `slo`: the source, the bounds, every sample, `passed` and `reason`.
    `baseline`: counts read before traffic moved (read now when not given)."""
    result: dict[str, Any] = {
        "source": source.describe(),
        "window": s.window,
        "interval": s.interval,
        "bounds": s.bounds(),
        "samples": [],
        "passed": False,
        "reason": None,
    }
    start = clock()
    try:
        base = baseline if baseline is not None else source.read()
    except SourceError as exc:
        result["reason"] = f"metrics could not be read before traffic moved: {exc}"
        return result
    while True:
        remaining = s.window - (clock() - start)
        sleep(max(0.0, min(s.interval, remaining)))
        elapsed = clock() - start
        try:
            now = source.read()
        except SourceError as exc:
            result["samples"].append({"t": round(elapsed, 2), "verdict": "breach", "reason": str(exc)})
            result["reason"] = f"metrics could not be read: {exc}"
            return result
        sample = judge(now.since(base), s, elapsed)
        result["samples"].append(sample)
        if sample["verdict"] == "breach":
            result["reason"] = sample["reason"]
            return result
        if elapsed >= s.window:
            break
    last = result["samples"][-1]
    result["passed"] = True
    if last["verdict"] == "no verdict":
        result["reason"] = (
            f"only {last['requests']} requests in {s.window:g}s (min_requests {s.min_requests}): no verdict"
        )
    return result


def read_baseline(source: Source) -> Counts | None:
    """The counts before traffic moves, or None when they cannot be read (`watch` then reads them itself
    and reports the failure)."""
    try:
        return source.read()
    except SourceError:
        return None
