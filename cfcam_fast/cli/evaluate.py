"""``cfcam-fast evaluate``: faithfulness, robustness and class sensitivity of CF-CAM against
Grad-CAM and Grad-CAM++ on photos, files, folders, list files or whole datasets (sharded
under torchrun, like ``explain``).

The methods are the registry ``cfcam_fast.evaluation.methods.METHODS`` (CF-CAM under both
filters and the three weighting rules, Grad-CAM, Grad-CAM++, Eigen-CAM, Smooth Grad-CAM++,
NormGrad and Score-CAM); the metric groups are ``cfcam_fast.evaluation.groups.METRICS``
(confidence change, deletion and insertion, ROAD, robustness to gradient noise, class
sensitivity and the randomisation sanity check). This module only parses, reads the
images and writes the files: ``cfcam_fast.evaluation.Evaluator`` computes everything.

Images are read as ``cfcam_fast.data.dataset`` says, in fixed batches of ``--batch-size`` (each
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
from functools import partial
from pathlib import Path

import torch

from ..data.dataset import Batch, Item
from ..evaluation.evaluate import Evaluator
from ..evaluation.groups import METRICS, Settings, select_metrics
from ..evaluation.methods import METHODS, select_methods, short_key
from ..evaluation.road import PERCENTILES as ROAD_PERCENTILES
from ..evaluation.summary import RESAMPLES
from . import argtypes
from .distributed import Context
from .options import (
    add_dataset_arguments,
    add_input_arguments,
    add_photos_argument,
    check_backend,
    collect_inputs,
    load_target,
    photo_set,
    run_config,
)
from .outputs import write_file_atomic, write_text_atomic
from .sharded import base_record, failure_record, run_command, run_dataset

HELP = "compare CF-CAM with Grad-CAM, Grad-CAM++ and other CAMs: faithfulness, ROAD, robustness, class " \
       "sensitivity, the randomisation sanity check and speed"
SHEET_IMAGES = 4  # images drawn in evaluate.png


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
    parser.add_argument("--batch-size", type=argtypes.integer(1), default=32,
                        help="images per batch, and per model call inside the metrics and Score-CAM's "
                        "masked forwards (default: 32)")
    parser.add_argument("--size", type=argtypes.integer(1), default=224,
                        help="side in pixels the images are resized to (default: 224)")
    parser.add_argument("--steps", type=argtypes.integer(1), default=100,
                        help="deletion/insertion steps (default: 100)")
    parser.add_argument("--scales", type=argtypes.numbers("scales", 0.0), default=[1.0, 5.0, 10.0],
                        help="gradient-noise scales for robustness, relative to each image's gradient "
                        "standard deviation, comma-separated (default: 1,5,10)")
    parser.add_argument("--draws", type=argtypes.integer(1), default=3, help="noise draws per scale (default: 3)")
    parser.add_argument("--road-percentiles", type=argtypes.numbers("ROAD percentiles", 0.0, 100.0),
                        default=list(ROAD_PERCENTILES),
                        help="percentiles of each map at which ROAD removes pixels, comma-separated "
                        "(default: 10,20,...,90)")
    parser.add_argument("--road-noise", type=argtypes.number(0.0), default=0.01,
                        help="standard deviation of the noise ROAD adds to imputed pixels (default: 0.01)")
    parser.add_argument("--sanity-steps", type=argtypes.integer(1), default=2,
                        help="checkpoints of the cascading randomisation to report, evenly spaced from the "
                        "classifier alone (1 layer re-initialised) to the whole model; 1: the whole model "
                        "only (default: 2)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the noise draws and of the bootstrap (default: 0)")
    parser.add_argument("--out", default="cfcam_eval", help="output folder (default: ./cfcam_eval)")


def settings(args: argparse.Namespace) -> Settings:
    """The evaluation settings the options give."""
    return Settings(batch_size=args.batch_size, steps=args.steps, scales=tuple(args.scales), draws=args.draws,
                    road_percentiles=tuple(args.road_percentiles), road_noise=args.road_noise,
                    sanity_steps=args.sanity_steps, seed=args.seed)


def evaluate_batch(evaluator: Evaluator, batch: Batch, items: list[Item], wanted: set[int],
                   device: torch.device) -> tuple[list[dict], None]:
    """The records of the images of ``batch`` in ``wanted``: every chosen metric of every
    method (null where a metric does not apply) and each method's explanation time per
    image; an unreadable file's record says why. No files to write."""
    records = [failure_record(items[i], reason) for i, reason in batch.failures if i in wanted]
    if batch.pixels is None:
        return records, None
    seed = evaluator.context.settings.seed + min(batch.indices + [i for i, _ in batch.failures])
    got = evaluator.batch(batch.pixels.to(device), seed)
    for row, index in enumerate(batch.indices):
        if index in wanted:
            records.append({**base_record(items[index]), **got.record(row)})
    return records, None


def _write_sheet(path: Path, evaluator: Evaluator, items: list[Item], size: int, device: torch.device) -> None:
    """evaluate.png for ``items`` (the first few explained images): every method's maps on
    them, and the first one's maps for its top and its bottom class."""
    from PIL import Image

    from ..data.dataset import read_image
    from ..data.images import preprocess
    from ..data.models import imagenet_classes
    from ..evaluation.sheet import sheet, sheet_maps

    originals = [read_image(item.key) for item in items]
    x = preprocess(originals, size=size).to(device)
    photos = [image.resize((size, size), Image.Resampling.BILINEAR) for image in originals]
    drawn = sheet_maps(evaluator.cams, x, evaluator.context.settings.seed)
    figure = sheet([item.name for item in items], photos, drawn, imagenet_classes())
    write_file_atomic(path, lambda temporary: figure.savefig(temporary, format="png", dpi=80))


def run(args: argparse.Namespace) -> int:
    """Evaluate every method on the readable images; returns 0, or 1 if a file was skipped;
    raises ``ValueError`` naming the bad input, or when no image can be read."""
    return run_command(args.device, args.timeout, Path(args.out), lambda ctx, out: _evaluate(args, ctx, out))


def _evaluate(args: argparse.Namespace, ctx: Context, out: Path) -> int:
    names, chosen = select_methods(args.methods), select_metrics(args.metrics)  # bad names fail first
    items = collect_inputs(args)
    target = load_target(args, ctx.device, args.size)
    check_backend(args.backend, ctx.device)
    evaluator = Evaluator.build(target.model, target.layer, names, [m.name for m in chosen], settings(args),
                                backend=args.backend, reshape_transform=target.transform)
    context = evaluator.context
    config = {**run_config("evaluate", args, target, ctx.device), "steps": args.steps, "scales": args.scales,
              "draws": args.draws, "seed": args.seed, "method_names": list(evaluator.cams),
              "metric_groups": [m.name for m in evaluator.chosen], "road_percentiles": args.road_percentiles,
              "road_noise": args.road_noise, "sanity_steps_reported": [s + 1 for s in context.sanity_at],
              "sanity_layers": context.sanity_layers, "photos": None if args.paths else photo_set(args)}
    process = partial(evaluate_batch, evaluator, device=ctx.device)
    shape = (args.batch_size, 3, args.size, args.size)
    outcome = run_dataset(ctx, items, out, batch_size=args.batch_size, size=args.size, workers=args.workers,
                          keep_images=False, process=process, command="evaluate", config=config,
                          decode_on_device=config["decode"] == "device",
                          warm_up=partial(evaluator.warm_up, shape, ctx.device) if ctx.device.type == "cuda" else None)
    if not ctx.main:  # the run's exit status is rank 0's (torchrun stops every rank when one fails)
        return 0
    records = outcome.records
    failed = sum("error" in r for r in records)
    print(outcome.line("evaluate"))
    if failed == len(items):
        raise ValueError(f"no image could be read: all {failed} failed (reasons above and in "
                         f"{out / 'results.jsonl'})")
    summary = evaluator.summarize(records)
    report = {**config, "device": str(ctx.device), "world_size": ctx.world_size, "images": len(items),
              "evaluated": len(records) - failed, "failed": failed, "bootstrap_resamples": RESAMPLES,
              "this_run": outcome.this_run(),
              "methods": summary}
    write_text_atomic(out / "summary.json", json.dumps(report, indent=2) + "\n")
    text = evaluator.tables(summary)
    print(text)
    write_text_atomic(out / "evaluate.md", text + "\n")
    by_key = {item.key: item for item in items}
    first = [by_key[r["file"]] for r in records if "error" not in r][:SHEET_IMAGES]
    _write_sheet(out / "evaluate.png", evaluator, first, args.size, ctx.device)
    print(f"wrote results.jsonl, summary.json, evaluate.md and evaluate.png to {out} "
          f"({len(records) - failed} images{f', {failed} files skipped' if failed else ''}, model {args.model}, "
          f"layer {target.layer_name}, device {ctx.device}, {ctx.world_size} process"
          f"{'es' if ctx.world_size > 1 else ''})")
    return 1 if failed else 0
