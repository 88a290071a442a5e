"""The runner's outputs: the markdown table, the JSON document and the PNG plot."""
from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path as FilePath

from .paths import AUTHORS, AUTHORS_POST, FLOOR

COLUMNS = ("path", "ms / image", "images / s", "x floor", "speed-up over authors")


def add_ratios(rows: list[dict]) -> None:
    """Fill ``ratio_to_floor`` and ``speedup_over_authors`` of every timed row, per (model, batch).

    Like is compared with like: a post-processing row against the authors' algorithm on the
    same captured tensors, an end-to-end row against the authors' algorithm end to end."""
    for _, grouped in groupby(rows, key=lambda r: (r["model"], r["batch"])):
        group = list(grouped)
        by_name = {r["path"]: r for r in group}
        floor = by_name.get(FLOOR, {}).get("median_s")
        authors = {kind: by_name.get(name, {}).get("median_s")
                   for kind, name in (("floor", AUTHORS), ("model", AUTHORS), ("post", AUTHORS_POST))}
        for r in group:
            t = r["median_s"]
            base = authors.get(r["kind"])
            r["ratio_to_floor"] = t / floor if t is not None and floor else None
            r["speedup_over_authors"] = base / t if t is not None and base else None


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict], device: str) -> str:
    """One markdown table per (model, batch), with a heading naming the shapes."""
    out = []
    for (model, batch), grouped in groupby(rows, key=lambda r: (r["model"], r["batch"])):
        group = list(grouped)
        first = group[0]
        out.append(f"### {model}, batch {batch}, {device} (input {first['input_shape']}, "
                   f"layer `{first['layer']}` {first['layer_shape']})\n")
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|" + "---|" * len(COLUMNS))
        for r in group:
            if r["skipped"]:
                out.append(f"| {r['path']} | skipped: {r['skipped']} | | | |")
                continue
            out.append(f"| {r['path']} | {_fmt(r['ms_per_image'], '.2f')} | "
                       f"{_fmt(r['images_per_s'], '.1f')} | {_fmt(r['ratio_to_floor'], '.2f')} | "
                       f"{_fmt(r['speedup_over_authors'], '.1f')} |")
        out.append("")
    return "\n".join(out)


def write_json(path: FilePath, meta: dict, rows: list[dict]) -> None:
    """The metadata and every row (times of each repeat included) as JSON."""
    path.write_text(json.dumps({**meta, "results": rows}, indent=2) + "\n")


def write_plot(path: FilePath, rows: list[dict], device: str) -> None:
    """Time per image against batch size, one line per path, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 5), squeeze=False)
    for ax, model in zip(axes[0], models):
        timed = [r for r in rows if r["model"] == model and not r["skipped"]]
        colors = [plt.get_cmap("tab20")(i) for i in range(20)]
        for i, name in enumerate(dict.fromkeys(r["path"] for r in timed)):
            points = sorted((r["batch"], r["ms_per_image"]) for r in timed if r["path"] == name)
            ax.plot(*zip(*points), marker="o", color=colors[i % len(colors)],
                    linestyle="--" if "post-processing" in name else "-", label=name)
        batches = sorted({r["batch"] for r in timed})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set(title=f"{model} ({device})", xlabel="batch size", ylabel="ms per image")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
