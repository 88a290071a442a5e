"""``cfcam-fast evaluate``: faithfulness, robustness and class sensitivity of CF-CAM against
Grad-CAM and Grad-CAM++ on photos, files, folders, list files or whole datasets (sharded
under torchrun, like ``explain``).

Methods (``METHODS``, a registry: display name -> factory taking the model, the target
layer, the CF-CAM backend and the ``reshape_transform``): CF-CAM under both filters and the
three weighting rules (docs/algorithm.md steps 5-6), Grad-CAM and Grad-CAM++. Metrics
(``METRICS``, a list; each computes per-image values for one method on one batch): average
drop and increase in confidence (map-multiplied and ``map > 0.5``), deletion and insertion
areas (zero and blurred baselines), SSIM robustness to gradient noise, and the top/bottom and
top/second class correlations (``cfcam_fast.metrics``). A new comparator or metric is one
more entry.

Images are read as ``cfcam_fast.dataset`` says, in fixed batches of ``--batch-size`` (each
metric's model calls take a whole batch; the noise of the robustness draws is seeded with
``--seed`` per batch). Written to ``--out``: ``results.jsonl`` (one record per image, sorted
by ``file``: ``class``, ``label`` for an ImageFolder, ``metrics`` per method and metric, and
``timing``, the milliseconds per image each method took to explain the batch; a file that
cannot be read has ``error`` instead), ``summary.json`` (options, counts, and per method
and metric the mean over images with its 95% percentile bootstrap interval, 1000 resamples
seeded with ``--seed``, computed after the merge so any number of processes gives the same
numbers; and the mean explanation time per image), ``evaluate.md`` (the table of means, also
printed) and ``evaluate.png`` (the first few images with every method's overlay, then the
first explained for its top and its bottom class under each method). A rerun with the same
``--out`` skips the images already done. The exit status is 1 if any file could not be
read; none readable is an error.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from .. import metrics
from ..baselines import GradCAM, GradCAMPlusPlus
from ..cam import CFCAM, BaseCAM
from ..comparators import EigenCAM, NormGrad, ScoreCAM
from ..config import FILTERS, WEIGHTINGS, CFCAMConfig
from ..dataset import Batch, Item
from ..distributed import Context
from ..outputs import write_file_atomic, write_text_atomic
from ..road import PERCENTILES as ROAD_PERCENTILES
from ..road import road
from ..smooth_gradcam import SmoothGradCAMPlusPlus
from .options import (
    add_dataset_arguments,
    add_input_arguments,
    add_photos_argument,
    check_backend,
    collect_inputs,
    load_target,
    non_negative_float,
    photo_set,
    positive_int,
    run_config,
)
from .sharded import base_record, failure_record, run_command, run_dataset, timed_explain

HELP = "compare CF-CAM with Grad-CAM, Grad-CAM++ and other CAMs: faithfulness, ROAD, robustness, class " \
       "sensitivity, the randomisation sanity check and speed"
SHEET_IMAGES = 4  # images drawn in evaluate.png
RESAMPLES = 1000  # bootstrap resamples per interval
FAITHFULNESS = ("confidence", "deletion", "road")  # the groups of evaluate.md's first table

# (key, column title, "lower" or "higher" is better)
COLUMNS = [
    ("average_drop", "Avg drop %", "lower"),
    ("average_drop_threshold", "Avg drop % (>0.5)", "lower"),
    ("increase", "Increase", "higher"),
    ("increase_threshold", "Increase (>0.5)", "higher"),
    ("deletion_zero", "Deletion (zero)", "lower"),
    ("insertion_zero", "Insertion (zero)", "higher"),
    ("deletion_blur", "Deletion (blur)", "lower"),
    ("insertion_blur", "Insertion (blur)", "higher"),
]
ROAD_COLUMNS = [
    ("road_morf", "ROAD MoRF", "lower"),
    ("road_lerf", "ROAD LeRF", "higher"),
    ("road_combined", "ROAD combined", "higher"),
]


def _numbers(what: str, low: float | None = None, high: float | None = None) -> Callable[[str], list[float]]:
    """argparse type: comma-separated numbers, each ``>= low`` (``> low`` when ``high`` is given, and
    then ``< high``)."""
    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got {text!r}") from None
        if high is None:
            ok = values and all(v >= low for v in values)
            rule = f">= {low:g}"
        else:
            ok = values and all(low < v < high for v in values)
            rule = f"in ({low:g}, {high:g})"
        if not ok:
            raise argparse.ArgumentTypeError(f"{what} must be numbers {rule}, got {text!r}")
        return values
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``evaluate``."""
    add_input_arguments(parser)
    add_photos_argument(parser)
    add_dataset_arguments(parser)
    parser.add_argument("--methods", default="all",
                        help="comma-separated methods, by display name or short key: "
                        + ", ".join(short_key(name) for name in METHODS) + " (default: all)")
    parser.add_argument("--metrics", default="all",
                        help="comma-separated metric groups: " + ", ".join(m.name for m in METRICS)
                        + " (default: all)")
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="images per batch, and per model call inside the metrics and Score-CAM's "
                        "masked forwards (default: 32)")
    parser.add_argument("--size", type=positive_int, default=224,
                        help="side in pixels the images are resized to (default: 224)")
    parser.add_argument("--steps", type=positive_int, default=100,
                        help="deletion/insertion steps (default: 100)")
    parser.add_argument("--scales", type=_numbers("scales", 0.0), default=[1.0, 5.0, 10.0],
                        help="gradient-noise scales for robustness, relative to each image's gradient "
                        "standard deviation, comma-separated (default: 1,5,10)")
    parser.add_argument("--draws", type=positive_int, default=3, help="noise draws per scale (default: 3)")
    parser.add_argument("--road-percentiles", type=_numbers("ROAD percentiles", 0.0, 100.0),
                        default=list(ROAD_PERCENTILES),
                        help="percentiles of each map at which ROAD removes pixels, comma-separated "
                        "(default: 10,20,...,90)")
    parser.add_argument("--road-noise", type=non_negative_float, default=0.01,
                        help="standard deviation of the noise ROAD adds to imputed pixels (default: 0.01)")
    parser.add_argument("--sanity-steps", type=positive_int, default=2,
                        help="checkpoints of the cascading randomisation to report, evenly spaced from the "
                        "classifier alone (1 layer re-initialised) to the whole model; 1: the whole model "
                        "only (default: 2)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the noise draws and of the bootstrap (default: 0)")
    parser.add_argument("--out", default="cfcam_eval", help="output folder (default: ./cfcam_eval)")


def _cfcam_factory(filter_: str, weighting: str) -> Callable:
    def make(model, layer, backend: str, reshape_transform=None, batch_size: int = 32):
        return CFCAM(model, [layer], reshape_transform, config=CFCAMConfig(filter=filter_, weighting=weighting),
                     backend=backend)
    return make


def _factory(cls: type, chunked: bool = False) -> Callable:
    """A factory of ``cls`` on the target layer; ``chunked``: it also takes ``batch_size``."""
    def make(model, layer, backend: str, reshape_transform=None, batch_size: int = 32):
        return cls(model, [layer], reshape_transform, **({"batch_size": batch_size} if chunked else {}))
    return make


def _registry() -> dict[str, Callable]:
    found = {f"CF-CAM {f}/{w}": _cfcam_factory(f, w) for f in FILTERS for w in WEIGHTINGS}
    found["Grad-CAM"] = _factory(GradCAM)
    found["Grad-CAM++"] = _factory(GradCAMPlusPlus)
    found["Eigen-CAM"] = _factory(EigenCAM)
    found["Smooth Grad-CAM++"] = _factory(SmoothGradCAMPlusPlus, chunked=True)
    found["NormGrad"] = _factory(NormGrad)
    found["Score-CAM"] = _factory(ScoreCAM, chunked=True)
    return found


# Display name -> factory(model, layer, backend, reshape_transform, batch_size) -> a cfcam_fast
# CAM; batch_size bounds the images per model call of Score-CAM and Smooth Grad-CAM++.
METHODS: dict[str, Callable] = _registry()


def short_key(name: str) -> str:
    """A method's short key for ``--methods``: its display name in lower case, spaces and
    slashes as dashes (``CF-CAM gaussian/softmax`` -> ``cf-cam-gaussian-softmax``)."""
    return name.lower().replace(" ", "-").replace("/", "-")


def select_methods(text: str) -> list[str]:
    """The display names ``--methods`` asks for, in ``METHODS`` order; ``ValueError`` listing
    the valid names for an unknown one."""
    if text.strip().lower() == "all":
        return list(METHODS)
    lookup = {**{short_key(n): n for n in METHODS}, **{n.lower(): n for n in METHODS}}
    asked = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in asked if v.lower() not in lookup]
    if unknown or not asked:
        raise ValueError(f"unknown method(s) {unknown or [text]} in --methods; valid: all, or any of "
                         + ", ".join(f"{short_key(n)} ({n!r})" for n in METHODS))
    chosen = {lookup[v.lower()] for v in asked}
    return [n for n in METHODS if n in chosen]


def methods(model, layer, backend: str, reshape_transform=None, names: list[str] | None = None,
            batch_size: int = 32) -> dict:
    """The registered methods ``names`` (default all of ``METHODS``) built on ``model`` and
    ``layer``, by display name."""
    return {name: METHODS[name](model, layer, backend, reshape_transform, batch_size)
            for name in (list(METHODS) if names is None else names)}


class Explained(NamedTuple):
    """One method's explanation of one batch, what every metric starts from."""

    cam: object
    x: object  # [B, 3, S, S] preprocessed images
    maps: object  # [B, S, S]
    classes: object  # [B] explained (top) classes
    logits: object  # [B, classes] the model's output on x
    seed: int  # the batch's seed: --seed plus the batch's first item index
    args: argparse.Namespace


def uses_captured_gradients(cam) -> bool:
    """Whether ``cam`` computes its maps from one captured forward and backward
    (``BaseCAM.explain`` with its ``_core``): only those can be fed perturbed gradients
    (robustness) or the gradients of two classes from one batched backward."""
    return type(cam).explain is BaseCAM.explain


class Metric(NamedTuple):
    """A group of per-image metrics: ``name`` (for ``--metrics``), ``compute(explained)``
    gives ``{key: [B] tensor}``; ``columns(args)`` the table's ``(key, title, "lower" or
    "higher" is better)`` for those keys; ``applies(cam)``: False where the metric means
    nothing for that method (its values are then null, "n/a" in the table)."""

    name: str
    compute: Callable[[Explained], dict]
    columns: Callable[[argparse.Namespace], list]
    applies: Callable[[object], bool] = lambda cam: True


def _confidence_change(e: Explained) -> dict:
    values = {}
    for variant, suffix in (("multiply", ""), ("threshold", "_threshold")):
        change = metrics.confidence_change(e.cam.model, e.x, e.maps, e.classes, variant=variant,
                                           batch_size=e.args.batch_size)
        values["average_drop" + suffix], values["increase" + suffix] = change.average_drop, change.increase
    return values


def _deletion_insertion(e: Explained) -> dict:
    values = {}
    for baseline in ("zero", "blur"):
        areas = metrics.deletion_insertion(e.cam.model, e.x, e.maps, e.classes, steps=e.args.steps,
                                           baseline=baseline, batch_size=e.args.batch_size)
        values[f"deletion_{baseline}"], values[f"insertion_{baseline}"] = areas
    return values


def _road(e: Explained) -> dict:
    """ROAD MoRF and LeRF, each from one ``road`` call seeded with the batch's seed, and the
    combined score ``(LeRF - MoRF) / 2`` per percentile derived from them (road.py)."""
    kwargs = {"percentiles": e.args.road_percentiles, "noise": e.args.road_noise, "seed": e.seed,
              "batch_size": e.args.batch_size}
    morf = road(e.cam.model, e.x, e.maps, e.classes, order="morf", **kwargs)
    lerf = road(e.cam.model, e.x, e.maps, e.classes, order="lerf", **kwargs)
    combined = ((lerf.per_percentile - morf.per_percentile) / 2).mean(1)
    return {"road_morf": morf.scores, "road_lerf": lerf.scores, "road_combined": combined}


def _robustness(e: Explained) -> dict:
    ssims = metrics.robustness(e.cam, e.x, e.classes, scales=e.args.scales, draws=e.args.draws, seed=e.args.seed)
    return {f"ssim_{scale:g}": values for scale, values in zip(e.args.scales, ssims)}


def _pair_correlation(e: Explained, pair: str):
    """``(correlation, constant_map)`` of each image's maps for two classes: the captured
    gradients of both from one batched backward where the method allows it
    (``metrics.class_sensitivity``), else two ``explain`` calls (the top map is ``e.maps``)."""
    if uses_captured_gradients(e.cam):
        result = metrics.class_sensitivity(e.cam, e.x, pair=pair, batch_size=e.args.batch_size)
        return result.correlation, result.constant_map
    logits = e.logits.flatten(1)
    other = logits.argmin(1) if pair == "top-bottom" else logits.topk(2, dim=1).indices[:, 1]
    maps = e.cam.explain(e.x, other.to(torch.int64)).maps
    return metrics.pearson(e.maps, maps)


def _class_sensitivity(e: Explained) -> dict:
    top_bottom, constant = _pair_correlation(e, "top-bottom")
    top_second, _ = _pair_correlation(e, "top-second")
    return {"corr_top_bottom": top_bottom, "constant_map_top_bottom": constant.any(1).float(),
            "corr_top_second": top_second}


def sanity_checkpoints(count: int, wanted: int) -> list[int]:
    """The steps of a cascading randomisation of ``count`` layers that ``--sanity-steps``
    ``wanted`` reports: evenly spaced from step 0 (the output layer alone) to step
    ``count - 1`` (the whole model), rounded; ``wanted=1``: the whole model only."""
    if wanted == 1:
        return [count - 1]
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})


def _sanity_columns(args: argparse.Namespace) -> list:
    count = args.sanity_layers
    cols = []
    for step in args.sanity_at:
        tag = f"{step + 1}_of_{count}"
        cols += [(f"sanity_spearman_{tag}", f"Spearman {step + 1}/{count} random", "lower"),
                 (f"sanity_ssim_{tag}", f"SSIM {step + 1}/{count} random", "lower")]
    return cols


def _sanity(e: Explained) -> dict:
    """Spearman and SSIM of the maps with the maps after re-initialising the model from the
    output, at ``args.sanity_at`` (cascading, seeded with ``--seed``: the same random layers
    for every batch)."""
    result = metrics.randomization_sanity(e.cam, e.x, e.classes, order="cascading", seed=e.args.seed,
                                          at=e.args.sanity_at, original_maps=e.maps)
    values = {}
    for row, step in enumerate(result.at):
        tag = f"{step + 1}_of_{len(result.steps)}"
        values[f"sanity_spearman_{tag}"], values[f"sanity_ssim_{tag}"] = result.spearman[row], result.ssim[row]
    return values


METRICS: list[Metric] = [
    Metric("confidence", _confidence_change, lambda args: COLUMNS[:4]),
    Metric("deletion", _deletion_insertion, lambda args: COLUMNS[4:]),
    Metric("road", _road, lambda args: ROAD_COLUMNS),
    Metric("robustness", _robustness,
           lambda args: [(f"ssim_{s:g}", f"SSIM noise {s:g}", "higher") for s in args.scales],
           uses_captured_gradients),
    Metric("sensitivity", _class_sensitivity, lambda args: [("corr_top_bottom", "Corr top/bottom", "lower"),
                                                            ("corr_top_second", "Corr top/2nd", "lower")]),
    Metric("sanity", _sanity, _sanity_columns),
]


def select_metrics(text: str) -> list[Metric]:
    """The metric groups ``--metrics`` asks for, in ``METRICS`` order; ``ValueError`` listing
    the valid names for an unknown one."""
    if text.strip().lower() == "all":
        return list(METRICS)
    asked = {v.strip().lower() for v in text.split(",") if v.strip()}
    valid = [m.name for m in METRICS]
    unknown = sorted(asked - set(valid))
    if unknown or not asked:
        raise ValueError(f"unknown metric group(s) {unknown or [text]} in --metrics; valid: all, or any of "
                         + ", ".join(valid))
    return [m for m in METRICS if m.name in asked]


def _set_noise_seed(cam, seed: int) -> None:
    """A method that draws input noise (Smooth Grad-CAM++) gets a fresh generator seeded
    with ``seed``, so its draws depend on the batch alone, not on the process or order."""
    if hasattr(cam, "generator"):
        cam.generator = torch.Generator().manual_seed(seed)


def evaluate_batch(cams: dict, batch: Batch, items: list[Item], wanted: set, args: argparse.Namespace,
                   device, chosen: list[Metric] | None = None, warmed: set | None = None) -> list[dict]:
    """The records of the images of ``batch`` in ``wanted``: every metric of ``chosen``
    (default all of ``METRICS``) of every method (null where a metric does not apply), and
    each method's explanation time per image. A method not in ``warmed`` first explains the
    batch's first image untimed (one-time set-up costs stay out of its time) and is added."""

    chosen = METRICS if chosen is None else chosen
    records = [failure_record(items[i], reason) for i, reason in batch.failures if i in wanted]
    if batch.pixels is None:
        return records
    seed = args.seed + min(batch.indices + [i for i, _ in batch.failures])
    x = batch.pixels.to(device)
    values: dict[str, dict[str, list]] = {}
    milliseconds: dict[str, float] = {}
    classes = None
    for name, cam in cams.items():
        if warmed is not None and name not in warmed:
            cam.explain(x[:1])
            warmed.add(name)
        _set_noise_seed(cam, seed)
        result, batch_ms = timed_explain(cam, x, device)
        milliseconds[name] = batch_ms / len(x)
        classes = result.class_idx if classes is None else classes
        explained = Explained(cam, x, result.maps, result.class_idx, result.logits, seed, args)
        values[name] = {}
        for metric in chosen:
            if not metric.applies(cam):
                values[name].update({key: [None] * len(x) for key, _, _ in metric.columns(args)})
                continue
            for key, tensor in metric.compute(explained).items():
                values[name][key] = [float(v) for v in tensor.detach().double().cpu()]
    for row, index in enumerate(batch.indices):
        if index in wanted:
            records.append({**base_record(items[index]), "class": int(classes[row]),
                            "metrics": {m: {k: v[row] for k, v in per.items()} for m, per in values.items()},
                            "timing": {"milliseconds_per_image": {m: round(ms, 3) for m, ms in milliseconds.items()}}})
    return records


def summarize(records: list[dict], names: list[str], seed: int) -> dict:
    """Per method (``names``, in that order) and metric over the images: ``{mean, ci95: [low, high], n}`` (percentile
    bootstrap, ``RESAMPLES`` resamples seeded with ``seed``; ``mean`` and ``ci95`` null, ``n``
    0 for a metric that does not apply), and the mean milliseconds per image each method
    took to explain."""
    from ..bootstrap import bootstrap_mean

    good = [r for r in records if "error" not in r]
    summary: dict = {}
    for method in names if good else []:
        entry = {}
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


def _cell(stats: dict) -> str:
    if stats["mean"] is None:
        return "n/a"
    low, high = stats["ci95"]
    return f"{stats['mean']:.3f} [{low:.3f}, {high:.3f}]"


def table(summary: dict, args: argparse.Namespace, chosen: list[Metric] | None = None,
          speed: bool = True) -> str:
    """The markdown table: one row per method, per metric of ``chosen`` (default all of
    ``METRICS``) the mean and its 95% bootstrap interval (``n/a`` where it does not apply),
    and with ``speed`` the milliseconds per image the method took to explain."""
    chosen = METRICS if chosen is None else chosen
    cols = [c for metric in chosen for c in metric.columns(args)]
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


def tables(summary: dict, args: argparse.Namespace, chosen: list[Metric]) -> str:
    """evaluate.md: the faithfulness metrics (confidence, deletion, ROAD) in one table, the
    others and the speed in a second; a part with no chosen metric is left out."""
    first = [m for m in chosen if m.name in FAITHFULNESS]
    second = [m for m in chosen if m.name not in FAITHFULNESS]
    parts = []
    if first:
        parts.append(table(summary, args, first, speed=not second))
    if second or not first:
        parts.append(table(summary, args, second, speed=True))
    return "\n\n".join(parts)


def sheet(path: Path, names: list[str], photos: list, drawn: dict, class_names: list[str]) -> None:
    """Each photo with every method's overlay, then photo 0 for its top and bottom class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..viz import overlay

    method_names = list(drawn)
    rows, cols = len(photos) + 2, len(method_names) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (name, photo) in enumerate(zip(names, photos)):
        axes[r, 0].imshow(photo)
        axes[r, 0].set_title(name, fontsize=7)
        for c, method in enumerate(method_names, 1):
            axes[r, c].imshow(overlay(photo, drawn[method]["maps"][r]))
            if r == 0:
                axes[r, c].set_title(method, fontsize=7)
    for k, which in enumerate(("top", "bottom")):
        r = len(photos) + k
        index = drawn[method_names[0]]["pair_classes"][k]
        axes[r, 0].imshow(photos[0])
        axes[r, 0].set_title(f"{names[0]}, {which}:\n{class_names[index][:24]}", fontsize=7)
        for c, method in enumerate(method_names, 1):
            axes[r, c].imshow(overlay(photos[0], drawn[method]["pair_maps"][k]))
    fig.tight_layout()
    write_file_atomic(path, lambda temporary: fig.savefig(temporary, format="png", dpi=80))
    plt.close(fig)


def _draw_sheet(path: Path, cams: dict, items: list[Item], size: int, device, seed: int) -> None:
    """``sheet`` for ``items`` (the first few explained images): every method's maps on them,
    and the first one's maps for its top and its bottom class (two ``explain`` calls)."""
    from PIL import Image

    from ..dataset import read_image
    from ..models import imagenet_classes, preprocess

    originals = [read_image(item.key) for item in items]
    x = preprocess(originals, size=size).to(device)
    photos = [image.resize((size, size), Image.BILINEAR) for image in originals]
    drawn = {}
    for name, cam in cams.items():
        _set_noise_seed(cam, seed)
        result = cam.explain(x)
        top, bottom = int(result.class_idx[0]), int(result.logits[0].flatten().argmin())
        drawn[name] = {"maps": result.maps.cpu(),
                       "pair_maps": [result.maps[0].cpu(), cam.explain(x[:1], [bottom]).maps[0].cpu()],
                       "pair_classes": [top, bottom]}
    sheet(path, [item.name for item in items], photos, drawn, imagenet_classes())


def run(args: argparse.Namespace) -> int:
    """Evaluate every method on the readable images; returns 0, or 1 if a file was skipped;
    raises ``ValueError`` naming the bad input, or when no image can be read."""
    return run_command(args.device, args.timeout, Path(args.out), lambda ctx, out: _evaluate(args, ctx, out))


def _evaluate(args: argparse.Namespace, ctx: Context, out: Path) -> int:
    from ..sanity import randomizable_layers

    names = select_methods(args.methods)
    chosen = select_metrics(args.metrics)
    items = collect_inputs(args)
    target = load_target(args, ctx.device, args.size)
    check_backend(args.backend, ctx.device)
    cams = methods(target.model, target.layer, args.backend, target.transform, names, args.batch_size)
    args.sanity_layers = len(randomizable_layers(target.model))
    args.sanity_at = sanity_checkpoints(args.sanity_layers, args.sanity_steps)
    config = {**run_config("evaluate", args, target), "steps": args.steps, "scales": args.scales,
              "draws": args.draws, "seed": args.seed, "method_names": list(cams),
              "metric_groups": [m.name for m in chosen], "road_percentiles": args.road_percentiles,
              "road_noise": args.road_noise, "sanity_steps_reported": [s + 1 for s in args.sanity_at],
              "sanity_layers": args.sanity_layers, "photos": None if args.paths else photo_set(args)}

    warmed: set = set()

    def process(batch: Batch, items: list[Item], wanted: set) -> list[dict]:
        return evaluate_batch(cams, batch, items, wanted, args, ctx.device, chosen, warmed)

    outcome = run_dataset(ctx, items, out, batch_size=args.batch_size, size=args.size, workers=args.workers,
                          keep_images=False, process=process, command="evaluate", config=config)
    if not ctx.main:  # the run's exit status is rank 0's (torchrun stops every rank when one fails)
        return 0
    records = outcome.records
    failed = sum("error" in r for r in records)
    print(outcome.line("evaluate"))
    if failed == len(items):
        raise ValueError(f"no image could be read: all {failed} failed (reasons above and in "
                         f"{out / 'results.jsonl'})")
    summary = summarize(records, list(cams), args.seed)
    report = {**config, "device": str(ctx.device), "world_size": ctx.world_size, "images": len(items),
              "evaluated": len(records) - failed, "failed": failed, "bootstrap_resamples": RESAMPLES,
              "this_run": outcome.this_run(),
              "methods": summary}
    write_text_atomic(out / "summary.json", json.dumps(report, indent=2) + "\n")
    text = tables(summary, args, chosen)
    print(text)
    write_text_atomic(out / "evaluate.md", text + "\n")
    by_key = {item.key: item for item in items}
    first = [by_key[r["file"]] for r in records if "error" not in r][:SHEET_IMAGES]
    _draw_sheet(out / "evaluate.png", cams, first, args.size, ctx.device, args.seed)
    print(f"wrote results.jsonl, summary.json, evaluate.md and evaluate.png to {out} "
          f"({len(records) - failed} images{f', {failed} files skipped' if failed else ''}, model {args.model}, "
          f"layer {target.layer_name}, device {ctx.device}, {ctx.world_size} process"
          f"{'es' if ctx.world_size > 1 else ''})")
    return 1 if failed else 0
