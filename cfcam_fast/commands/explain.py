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
from typing import Callable, Iterator

HELP = "explain images (default: the photos bundled with scikit-image and scikit-learn)"

Item = tuple[str, str, Callable]  # (output name, source shown in summary.json, image loader)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``explain``."""
    from ..config import FILTERS, WEIGHTINGS
    from ..models import DEFAULT_MODEL

    parser.add_argument("paths", nargs="*", help="image files and folders (images inside folders, "
                        "sorted); none: the bundled photos")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="torchvision or timm model name (default: %(default)s, pretrained)")
    parser.add_argument("--weights", help="state-dict file for the model (loaded with weights_only=True)")
    parser.add_argument("--layer", help="dotted name of the target layer (default: the model's last "
                        "convolutional stage, e.g. bn2 for efficientnet_lite0, layer4 for ResNets)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--batch-size", type=_positive_int, default=8, help="images per batch (default: 8)")
    parser.add_argument("--backend", default="auto", help="CF-CAM backend: auto, reference, torch, triton "
                        "(default: auto)")
    parser.add_argument("--filter", choices=FILTERS, default="gaussian",
                        help="cluster-gradient filter (default: gaussian, the paper's)")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default="softmax",
                        help="channel weighting (default: softmax, the authors')")
    parser.add_argument("--out", default="cfcam_out", help="output folder (default: ./cfcam_out)")


def _device(name: str | None):
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    return device


def _items(paths: list[str]) -> list[Item]:
    """What to explain: the bundled photos, or the given files and the images in given folders."""
    from PIL import Image

    from ..models import bundled_photos, load_image

    if not paths:
        return [(name, f"bundled:{name}", (lambda image=image: image)) for name, image in bundled_photos()]
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    files: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions)
            if not found:
                raise ValueError(f"no images in folder {text}")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise ValueError(f"no such file or folder: {text}")
    items, used = [], set()
    for path in files:
        name, n = path.stem, 1
        while name in used:
            n += 1
            name = f"{path.stem}_{n}"
        used.add(name)
        items.append((name, str(path), (lambda path=path: load_image(path))))
    return items


def _batches(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _backend_check(name: str, device) -> None:
    from ..backends import resolve

    try:
        resolve(name, device)
    except (RuntimeError, ImportError) as exc:
        raise ValueError(f"backend {name!r} cannot run on {device}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Explain every image; returns 0, or raises ``ValueError`` naming the bad input."""
    import torch
    from tqdm import tqdm

    from .. import CFCAM, CFCAMConfig
    from ..models import imagenet_classes, load_model, preprocess, resolve_layer
    from ..viz import save_overlay

    device = _device(args.device)
    config = CFCAMConfig(filter=args.filter, weighting=args.weighting)
    items = _items(args.paths)
    model, default = load_model(args.model, args.weights, device)
    layer_name = args.layer or default
    layer = resolve_layer(model, layer_name)
    _backend_check(args.backend, device)
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
