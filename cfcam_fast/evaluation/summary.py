"""What an evaluation reports: per method and metric the mean over images with its
bootstrap interval, and the markdown tables of those."""
from __future__ import annotations

from typing import Any

from .bootstrap import bootstrap_mean
from .groups import FAITHFULNESS, METRICS, Context, Metric

RESAMPLES = 1000  # bootstrap resamples per interval


def summarize(records: list[dict[str, Any]], names: list[str], seed: int) -> dict[str, Any]:
    """Per method (``names``, in that order) and metric over the records: ``{mean, ci95:
    [low, high], n}`` (percentile bootstrap, ``RESAMPLES`` resamples seeded with ``seed``;
    ``mean`` and ``ci95`` null, ``n`` 0 for a metric that does not apply), and the mean
    milliseconds per image each method took to explain. Records with an ``error`` are left
    out."""
    good = [r for r in records if "error" not in r]
    summary: dict[str, Any] = {}
    for method in names if good else []:
        entry: dict[str, Any] = {}
        for key in good[0]["metrics"][method]:
            found = [r["metrics"][method][key] for r in good if r["metrics"][method][key] is not None]
            if not found:
                entry[key] = {"mean": None, "ci95": None, "n": 0}
                continue
            interval = bootstrap_mean(found, resamples=RESAMPLES, seed=seed)
            entry[key] = {"mean": interval.mean, "ci95": [interval.low, interval.high], "n": interval.n}
        times = [r["timing"]["milliseconds_per_image"][method] for r in good if "timing" in r]
        summary[method] = {"metrics": entry,
                           "milliseconds_per_image": round(sum(times) / len(times), 3) if times else None}
    return summary


def _cell(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "n/a"
    low, high = stats["ci95"]
    return f"{stats['mean']:.3f} [{low:.3f}, {high:.3f}]"


def table(summary: dict[str, Any], context: Context, chosen: list[Metric] | None = None,
          speed: bool = True) -> str:
    """The markdown table: one row per method, per metric of ``chosen`` (default all of
    ``METRICS``) the mean and its 95% bootstrap interval (``n/a`` where it does not apply),
    and with ``speed`` the milliseconds per image the method took to explain."""
    chosen = METRICS if chosen is None else chosen
    cols = [c for metric in chosen for c in metric.columns(context)]
    arrow = {"lower": "↓", "higher": "↑"}
    titles = [f"{title} {arrow[better]}" for _, title, better in cols] + (["ms / image"] if speed else [])
    lines = ["| Method | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(titles)]
    for name, entry in summary.items():
        cells = [_cell(entry["metrics"][key]) for key, _, _ in cols]
        if speed:
            ms = entry["milliseconds_per_image"]
            cells.append("n/a" if ms is None else f"{ms:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tables(summary: dict[str, Any], context: Context, chosen: list[Metric]) -> str:
    """The faithfulness metrics (confidence, deletion, ROAD) in one table, the others and
    the speed in a second; a part with no chosen metric is left out."""
    first = [m for m in chosen if m.name in FAITHFULNESS]
    second = [m for m in chosen if m.name not in FAITHFULNESS]
    parts = []
    if first:
        parts.append(table(summary, context, first, speed=not second))
    if second or not first:
        parts.append(table(summary, context, second, speed=True))
    return "\n\n".join(parts)
