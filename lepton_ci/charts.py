"""Mermaid charts for reports: metric history across registry versions, with the candidate last.

Mermaid renders on both GitHub and GitLab, so plots live inside the markdown and nothing is uploaded to
an asset host (CML's public asset uploads are what this replaces).
"""

from __future__ import annotations

from typing import Any

MAX_POINTS = 20


def _label(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def _axis_range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or abs(lo) * 0.05 or 1.0
    return lo - pad, hi + pad


def history_chart(metric: str, history: list[tuple[str, float]], candidate: float | None) -> str | None:
    """One xychart per metric: registry versions (oldest first) then the candidate."""
    points = list(history[-MAX_POINTS:])
    if candidate is not None:
        points.append(("candidate", candidate))
    if len(points) < 2:
        return None
    lo, hi = _axis_range([v for _, v in points])
    labels = ", ".join(_label(name) for name, _ in points)
    values = ", ".join(f"{v:.6g}" for _, v in points)
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            f"    title {_label(metric)}",
            f"    x-axis [{labels}]",
            f"    y-axis {_label(metric)} {lo:.6g} --> {hi:.6g}",
            f"    line [{values}]",
            "```",
        ]
    )


def history_charts(
    metrics: list[str], versions: list[Any], candidate: dict[str, Any], aliases: dict[str, int]
) -> list[str]:
    by_version = {v: a for a, v in sorted(aliases.items())}
    out = []
    for metric in metrics:
        history = []
        for mv in versions:
            value = mv.metrics.get(metric)
            if isinstance(value, (int, float)):
                tag = f"v{mv.version}" + (f" ({by_version[mv.version]})" if mv.version in by_version else "")
                history.append((tag, float(value)))
        chart = history_chart(metric, history, candidate.get(metric))
        if chart:
            out.append(chart)
    return out


def param_chart(param: str, metric: str, points: list[tuple[Any, float]], direction: str = "higher") -> str | None:
    """A sweep's parameter-vs-metric chart: the best value of `metric` for each value of `param` (numbers in
    increasing order, others as they first appear), as one bar per parameter value."""
    best: dict[Any, float] = {}
    pick = max if direction == "higher" else min
    for x, y in points:
        key = json_key(x)
        best[key] = y if key not in best else pick(best[key], y)
    if len(best) < 2:
        return None
    keys = list(best)
    if all(isinstance(k, (int, float)) and not isinstance(k, bool) for k in keys):
        keys.sort()
    lo, hi = _axis_range(list(best.values()))
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            f"    title {_label(f'{metric} by {param}')}",
            f"    x-axis {_label(param)} [{', '.join(_label(str(k)) for k in keys)}]",
            f"    y-axis {_label(metric)} {lo:.6g} --> {hi:.6g}",
            f"    bar [{', '.join(f'{best[k]:.6g}' for k in keys)}]",
            "```",
        ]
    )


def json_key(value: Any) -> Any:
    """A hashable stand-in for a parameter value (lists and mappings by their JSON text)."""
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, sort_keys=True)
    return value
