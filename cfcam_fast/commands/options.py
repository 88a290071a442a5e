"""Command-line options and inputs shared by the ``cfcam-fast`` subcommands."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

Item = tuple[str, str, Callable]  # (output name, source shown in summaries, image loader)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say what to explain and with what: paths, model, weights, layer,
    device and CF-CAM backend."""
    from ..models import DEFAULT_MODEL

    parser.add_argument("paths", nargs="*", help="image files and folders (images inside folders, "
                        "sorted); none: the bundled photos")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="torchvision or timm model name (default: %(default)s, pretrained)")
    parser.add_argument("--weights", help="state-dict file for the model (loaded with weights_only=True)")
    parser.add_argument("--layer", help="dotted name of the target layer (default: the model's last "
                        "convolutional stage, e.g. bn2 for efficientnet_lite0, layer4 for ResNets)")
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


def check_backend(name: str, device) -> None:
    """``ValueError`` unless CF-CAM backend ``name`` can run on ``device``."""
    from ..backends import resolve

    try:
        resolve(name, device)
    except (RuntimeError, ImportError) as exc:
        raise ValueError(f"backend {name!r} cannot run on {device}: {exc}") from None
