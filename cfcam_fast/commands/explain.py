"""``cfcam-fast explain``: CF-CAM overlays and a summary for photos, files or folders.

Per image ``<name>_cfcam.png`` (the map over the photo, titled with the predicted ImageNet
class and its confidence) and one ``summary.json`` with an entry per image done, written
after every batch, so that an error part-way leaves the finished images and their entries.
An entry holds ``file`` (the path, or ``bundled:<name>``), ``overlay`` (the PNG's name),
``class`` (ImageNet index), ``name`` (class name), ``confidence`` (softmax probability) and
``milliseconds`` (the image's share of its batch's forward, backward and CF-CAM time).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Iterator

from .options import (Item, add_input_arguments, check_backend, device_option, image_items,
                      positive_int)

HELP = "explain images (default: the photos bundled with scikit-image and scikit-learn)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``explain``."""
    from ..config import FILTERS, WEIGHTINGS

    add_input_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per batch (default: 8)")
    parser.add_argument("--filter", choices=FILTERS, default="gaussian",
                        help="cluster-gradient filter (default: gaussian, the paper's)")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default="softmax",
                        help="channel weighting (default: softmax, the authors')")
    parser.add_argument("--out", default="cfcam_out", help="output folder (default: ./cfcam_out)")


def _batches(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def run(args: argparse.Namespace) -> int:
    """Explain every image; returns 0, or raises ``ValueError`` naming the bad input."""
    import torch
    from tqdm import tqdm

    from .. import CFCAM, CFCAMConfig
    from ..models import imagenet_classes, load_model, preprocess, resolve_layer
    from ..viz import save_overlay

    device = device_option(args.device)
    config = CFCAMConfig(filter=args.filter, weighting=args.weighting)
    items = image_items(args.paths)
    model, default = load_model(args.model, args.weights, device)
    layer_name = args.layer or default
    layer = resolve_layer(model, layer_name)
    check_backend(args.backend, device)
    classes = imagenet_classes()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    summary: list[dict] = []
    batches = list(_batches(items, args.batch_size))
    progress = tqdm(batches, desc="explain", unit="batch", disable=len(batches) < 2)
    with CFCAM(model, [layer], config=config, backend=args.backend) as cam, progress:
        for batch in progress:
            images, error = [], None
            for _, _, load in batch:
                try:
                    images.append(load())
                except ValueError as exc:
                    error = exc
                    break
            if images:
                x = preprocess(images).to(device)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                result = cam.explain(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                milliseconds = (time.perf_counter() - start) * 1000.0 / len(images)
                probabilities = result.logits.float().softmax(1).cpu()
                maps = result.maps.cpu()
                for i, ((name, source, _), image) in enumerate(zip(batch, images)):
                    index = int(result.class_idx[i])
                    label = classes[index] if 0 <= index < len(classes) else f"class {index}"
                    confidence = float(probabilities[i, index])
                    png = out / f"{name}_cfcam.png"
                    save_overlay(png, image, maps[i], f"{label} ({confidence * 100:.1f}%)")
                    summary.append({"file": source, "overlay": png.name, "class": index, "name": label,
                                    "confidence": round(confidence, 6),
                                    "milliseconds": round(milliseconds, 3)})
                    tqdm.write(f"{name}: {label} ({confidence * 100:.1f}%)")
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            if error is not None:
                raise error
    print(f"wrote {len(summary)} overlays and summary.json to {out} "
          f"(model {args.model}, layer {layer_name}, backend {args.backend}, device {device})")
    return 0
