"""``cfcam-fast evaluate``: faithfulness, robustness and class sensitivity of CF-CAM against
Grad-CAM and Grad-CAM++ on photos, files or folders.

Methods: CF-CAM under both filters and the three weighting rules (docs/algorithm.md steps 5-6),
Grad-CAM and Grad-CAM++, all on the same target layer. Metrics (``cfcam_fast.metrics``),
averaged over the images: average drop and increase in confidence (map-multiplied and
``map > 0.5``), deletion and insertion areas (zero and blurred baselines), SSIM robustness
to gradient noise, and the top/bottom and top/second class correlations. Written to
``--out``: ``evaluate.md`` (the table, also printed), ``evaluate.json`` (per-image values
and means; ``skipped``: ``{file, error}`` per file that could not be read) and
``evaluate.png`` (each photo with every method's overlay, then the first photo explained
for its top and its bottom class under each method). A file that cannot be read is reported
on stderr and skipped, and makes the exit status 1; none readable is an error.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import (add_input_arguments, check_backend, device_option, image_items, load_target,
                      positive_int, skipped, try_load)

HELP = "compare CF-CAM with Grad-CAM and Grad-CAM++: faithfulness, robustness, class sensitivity"

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


def _scales(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales must be comma-separated numbers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"scales must be numbers >= 0, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``evaluate``."""
    add_input_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="images per model call inside the metrics (default: 32)")
    parser.add_argument("--size", type=positive_int, default=224,
                        help="side in pixels the images are resized to (default: 224)")
    parser.add_argument("--steps", type=positive_int, default=100,
                        help="deletion/insertion steps (default: 100)")
    parser.add_argument("--scales", type=_scales, default=[1.0, 5.0, 10.0],
                        help="gradient-noise scales for robustness, relative to each image's gradient "
                        "standard deviation, comma-separated (default: 1,5,10)")
    parser.add_argument("--draws", type=positive_int, default=3, help="noise draws per scale (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise draws (default: 0)")
    parser.add_argument("--out", default="cfcam_eval", help="output folder (default: ./cfcam_eval)")


def methods(model, layer, backend: str, reshape_transform=None) -> dict:
    """Every compared method by its display name: CF-CAM per filter and weighting, then the baselines."""
    from .. import CFCAM, CFCAMConfig
    from ..baselines import GradCAM, GradCAMPlusPlus
    from ..config import FILTERS, WEIGHTINGS

    found = {f"CF-CAM {f}/{w}": CFCAM(model, [layer], reshape_transform,
                                      config=CFCAMConfig(filter=f, weighting=w), backend=backend)
             for f in FILTERS for w in WEIGHTINGS}
    found["Grad-CAM"] = GradCAM(model, [layer], reshape_transform)
    found["Grad-CAM++"] = GradCAMPlusPlus(model, [layer], reshape_transform)
    return found


def evaluate_method(cam, x, args, progress) -> tuple[dict, dict]:
    """Per-image values of every metric for one method, and the maps to draw."""
    import torch

    from .. import metrics

    model, bs = cam.model, args.batch_size
    results = [cam.explain(chunk) for chunk in x.split(bs)]
    maps = torch.cat([r.maps for r in results])
    classes = torch.cat([r.class_idx for r in results])
    progress.update()
    values = {}
    for variant, suffix in (("multiply", ""), ("threshold", "_threshold")):
        change = metrics.confidence_change(model, x, maps, classes, variant=variant, batch_size=bs)
        values["average_drop" + suffix], values["increase" + suffix] = change.average_drop, change.increase
    progress.update()
    for baseline in ("zero", "blur"):
        areas = metrics.deletion_insertion(model, x, maps, classes, steps=args.steps, baseline=baseline,
                                           batch_size=bs)
        values[f"deletion_{baseline}"], values[f"insertion_{baseline}"] = areas
        progress.update()
    parts = [metrics.robustness(cam, chunk, targets, scales=args.scales, draws=args.draws, seed=args.seed)
             for chunk, targets in zip(x.split(bs), classes.split(bs))]
    for i, scale in enumerate(args.scales):
        values[f"ssim_{scale:g}"] = torch.cat([p[i] for p in parts])
    progress.update()
    top_bottom = metrics.class_sensitivity(cam, x, pair="top-bottom", batch_size=bs)
    values["corr_top_bottom"] = top_bottom.correlation
    values["constant_map_top_bottom"] = top_bottom.constant_map.any(1).float()
    values["corr_top_second"] = metrics.class_sensitivity(cam, x, pair="top-second", batch_size=bs).correlation
    progress.update()
    drawn = {"maps": maps.cpu(), "pair_maps": top_bottom.maps[0].cpu(), "pair_classes": top_bottom.classes[0].tolist()}
    return {k: [round(float(v), 6) for v in t.cpu()] for k, t in values.items()}, drawn


def table(results: dict, scales: list[float]) -> str:
    """The markdown table of means: one row per method, one column per metric."""
    cols = COLUMNS + [(f"ssim_{s:g}", f"SSIM noise {s:g}", "higher") for s in scales] + [
        ("corr_top_bottom", "Corr top/bottom", "lower"), ("corr_top_second", "Corr top/2nd", "lower")]
    arrow = {"lower": "↓", "higher": "↑"}
    lines = ["| Method | " + " | ".join(f"{title} {arrow[better]}" for _, title, better in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for name, entry in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{entry['mean'][key]:.3f}" for key, _, _ in cols) + " |")
    return "\n".join(lines)


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
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Evaluate every method on the readable images; returns 0, or 1 if a file was skipped;
    raises ``ValueError`` naming the bad input, or when no image can be read."""
    from PIL import Image
    from tqdm import tqdm

    from ..models import imagenet_classes, preprocess

    device = device_option(args.device)
    items = image_items(args.paths)
    target = load_target(args, device, args.size)
    check_backend(args.backend, device)
    names, originals, skips = [], [], []
    for item in items:
        image, reason = try_load(item)
        if image is None:
            skips.append(skipped(item[1], reason))
        else:
            names.append(item[0])
            originals.append(image)
    if not originals:
        raise ValueError(f"no image could be read: all {len(items)} failed (reasons above)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = preprocess(originals, size=args.size).to(device)
    photos = [image.resize(tuple(x.shape[-2:][::-1]), Image.BILINEAR) for image in originals]

    found = methods(target.model, target.layer, args.backend, target.transform)
    results, drawn = {}, {}
    with tqdm(total=6 * len(found), desc="evaluate", unit="step") as progress:
        for name, cam in found.items():
            progress.set_postfix_str(name)
            per_image, drawn[name] = evaluate_method(cam, x, args, progress)
            results[name] = {"per_image": per_image,
                             "mean": {k: round(sum(v) / len(v), 6) for k, v in per_image.items()}}
    text = table(results, args.scales)
    print(text)
    (out / "evaluate.md").write_text(text + "\n")
    report = {"model": args.model, "layer": target.layer_name, "device": str(device), "backend": args.backend,
              "size": args.size, "steps": args.steps, "scales": args.scales, "draws": args.draws, "seed": args.seed,
              "images": names, "skipped": skips, "methods": results}
    (out / "evaluate.json").write_text(json.dumps(report, indent=2) + "\n")
    sheet(out / "evaluate.png", names, photos, drawn, imagenet_classes())
    print(f"wrote evaluate.md, evaluate.json and evaluate.png to {out} ({len(names)} images"
          f"{f', {len(skips)} files skipped' if skips else ''}, model {args.model}, "
          f"layer {target.layer_name}, device {device})")
    return 1 if skips else 0
