"""Command-line options and inputs shared by the ``cfcam-fast`` subcommands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, NamedTuple, Optional

Item = tuple[str, str, Callable]  # (output name, source shown in summaries, image loader)


class Target(NamedTuple):
    """What the options ask to explain: the model, its target layer (name and module) and the
    ``reshape_transform`` for the layer's output (``None``: already ``[B, C, H, W]``)."""

    model: object
    layer_name: str
    layer: object
    transform: Optional[Callable]


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say what to explain and with what: paths, model, weights, layer,
    reshape, device and CF-CAM backend."""
    from ..models import DEFAULT_MODEL

    parser.add_argument("paths", nargs="*", help="image files and folders (images inside folders, "
                        "sorted); none: the bundled photos")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="torchvision or timm model name (default: %(default)s, the only one with "
                        "pretrained weights built in; any other needs --weights or --random-weights)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--weights", metavar="FILE",
                         help="state-dict file for the model (loaded with weights_only=True)")
    weights.add_argument("--random-weights", action="store_true",
                         help="explain the random-initialised model (its maps say nothing about the "
                         "data; for testing)")
    parser.add_argument("--layer", help="dotted name of the target layer (default: bn2 for "
                        "efficientnet_lite0, the last block's norm1 for ViT, DeiT and Swin, layer4 "
                        "for ResNets, else the last layer with a [B, C, H, W] output)")
    parser.add_argument("--reshape", choices=("auto", "none", "vit", "swin"), default="auto",
                        help="lay the layer's output out as [B, C, H, W]: vit drops the class tokens "
                        "and puts the rest on the patch grid, swin permutes [B, H, W, C], none keeps "
                        "it (default: auto, vit or swin for those families, else none)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--backend", default="auto", help="CF-CAM backend: auto, reference, torch, triton "
                        "(default: auto)")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def device_option(name: str | None):
    """The ``--device`` option as a device (default: CUDA when present); ``ValueError`` if unusable."""
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


def image_items(paths: list[str]) -> list[Item]:
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


def load_target(args: argparse.Namespace, device, size: int = 224) -> Target:
    """The model, layer and reshape the options ask for; ``ValueError`` unless the model runs
    on ``size`` x ``size`` images and the layer then gives CF-CAM a ``[B, C, H, W]`` output."""
    from ..models import check_layer, load_model, reshape_transform, resolve_layer

    model, default = load_model(args.model, args.weights, device, random_weights=args.random_weights)
    name = args.layer or default
    layer = resolve_layer(model, name)
    transform = reshape_transform(model, args.reshape)
    check_layer(model, name, transform, size)
    return Target(model, name, layer, transform)


def try_load(item: Item):
    """``(image, None)``, or ``(None, reason)`` for a file that cannot be read."""
    try:
        return item[2](), None
    except ValueError as exc:
        return None, f"cannot read image: {exc.__cause__ or exc}"


def skipped(source: str, reason: str) -> dict:
    """Report on stderr that ``source`` is skipped; returns its summary entry ``{file, error}``."""
    from tqdm import tqdm

    tqdm.write(f"cfcam-fast: skipped {source}: {reason}", file=sys.stderr)
    return {"file": source, "error": reason}


def check_backend(name: str, device) -> None:
    """``ValueError`` unless CF-CAM backend ``name`` can run on ``device``."""
    from ..backends import resolve

    try:
        resolve(name, device)
    except (RuntimeError, ImportError) as exc:
        raise ValueError(f"backend {name!r} cannot run on {device}: {exc}") from None
