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
