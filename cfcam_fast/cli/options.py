"""Command-line options and inputs shared by the ``cfcam-fast`` subcommands."""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from ..cams.base import BaseCAM
from ..core.plan import CORES
from . import argtypes


class Target(NamedTuple):
    """What the options ask to explain: the model, its target layer (name and module) and the
    ``reshape_transform`` for the layer's output (``None``: already ``[B, C, H, W]``)."""

    model: nn.Module
    layer_name: str
    layer: nn.Module
    transform: Callable | None


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that say what to explain and with what: paths, model, weights, layer,
    reshape, device and CF-CAM backend."""
    parser.add_argument("paths", nargs="*", help="image files, folders (flat, or one sub-folder per "
                        "class: the ImageFolder layout, folder names kept as labels) and list files "
                        "(.txt, .lst, .list: one image path per line, relative to the list's folder; "
                        "# comments); none: the bundled photos")
    add_model_arguments(parser)
    parser.add_argument("--reshape", choices=("auto", "none", "vit", "swin"), default="auto",
                        help="lay the layer's output out as [B, C, H, W]: vit drops the class tokens "
                        "and puts the rest on the patch grid, swin permutes [B, H, W, C], none keeps "
                        "it (default: auto, vit or swin for those families, else none)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu; under "
                        "torchrun each process takes cuda:LOCAL_RANK, or the CPU)")
    parser.add_argument("--backend", default="auto",
                        help=f"CF-CAM backend: {', '.join(('auto', *CORES))} (default: auto)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the model and its target layer: model, weights (or random
    weights) and layer."""
    from ..data.models import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="torchvision or timm model name (default: %(default)s, the only one with "
                        "pretrained weights built in; any other needs --weights or --random-weights)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--weights", metavar="FILE",
                         help="weights for the model: a state-dict file (loaded with weights_only=True) or a "
                         ".safetensors file")
    weights.add_argument("--random-weights", action="store_true",
                         help="explain the random-initialised model (its maps say nothing about the "
                         "data; for testing)")
    parser.add_argument("--layer", help="dotted name of the target layer (default: bn2 for "
                        "efficientnet_lite0, the last block's norm1 for ViT, DeiT and Swin, layer4 "
                        "for ResNets, else the last layer with a [B, C, H, W] output)")


def load_target(args: argparse.Namespace, device: torch.device, size: int = 224) -> Target:
    """The model, layer and reshape the options ask for; ``ValueError`` unless the model runs
    on ``size`` x ``size`` images and the layer then gives CF-CAM a ``[B, C, H, W]`` output."""
    import torch

    from ..data.layers import check_layer, reshape_transform, resolve_layer
    from ..data.models import load_model

    if args.random_weights:  # the same weights in every process of a sharded run, and in every run
        torch.manual_seed(0)
    model, default = load_model(args.model, args.weights, device, random_weights=args.random_weights)
    name = args.layer or default
    layer = resolve_layer(model, name)
    transform = reshape_transform(model, getattr(args, "reshape", "none"))
    check_layer(model, name, transform, size)
    return Target(model, name, layer, transform)


def run_config(command: str, args: argparse.Namespace, target: Target, device: torch.device) -> dict:
    """The options every dataset run records in its ``config.json`` (a rerun into the same
    ``--out`` must match them): the command, the model, weights, layer, reshape, backend,
    image size, batch size and where JPEGs are decoded (``"device"`` or ``"cpu"``: the two
    resize alike to about one grey level, not bit for bit)."""
    decode = "device" if args.decode == "auto" and device.type == "cuda" else "cpu"
    return {"command": command, "model": args.model, "weights": args.weights, "random_weights": args.random_weights,
            "layer": target.layer_name, "reshape": args.reshape, "backend": args.backend, "size": args.size,
            "batch_size": args.batch_size, "decode": decode}


def warm_up(cam: BaseCAM, batch_size: int, size: int, device: torch.device) -> Callable[[], None] | None:
    """On CUDA, the call that pays a dataset run's one-time costs before its loop: ``cam``
    explains a random batch of the run's shape twice (kernel compilation and autotuning,
    then the capture of the core's graph); ``None`` elsewhere."""
    if device.type != "cuda":
        return None

    def run() -> None:
        x = torch.randn(batch_size, 3, size, size, device=device, generator=torch.Generator(device).manual_seed(0))
        for _ in range(2):
            cam.explain(x)
    return run


def check_backend(name: str, device: Any) -> None:
    """``ValueError`` unless CF-CAM backend ``name`` can run on ``device``."""
    from ..core.backends import resolve

    try:
        resolve(name, device)
    except (RuntimeError, ImportError) as exc:
        raise ValueError(f"backend {name!r} cannot run on {device}: {exc}") from None


def default_workers() -> int:
    """DataLoader workers per process: the CPUs this process may use, shared by the processes
    torchrun starts on this machine (``LOCAL_WORLD_SIZE``), at least 1 and at most 4."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a dataset run: decoding workers and the process-group timeout (torchrun)."""
    parser.add_argument("--workers", type=argtypes.integer(0), default=default_workers(),
                        help="DataLoader worker processes decoding images per process, 0: decode in "
                        "the main process (default: %(default)s here: this machine's CPUs over the "
                        "processes on it, 1 to 4)")
    parser.add_argument("--timeout", type=argtypes.number(0.0, strict=True), default=600.0,
                        help="under torchrun: seconds a rank waits for the others in a collective "
                        "before it gives up with an error (default: %(default)g)")
    parser.add_argument("--decode", choices=("auto", "cpu"), default="auto",
                        help="where JPEG files are decoded and resized: auto, on the device when it is CUDA "
                        "(nvJPEG, in batches; files it refuses go to the CPU) and in the DataLoader workers "
                        "otherwise; cpu, always in the workers (default: auto)")


def add_photos_argument(parser: argparse.ArgumentParser) -> None:
    """``--photos``: which photos to use when no paths are given."""
    from ..data.photos import PHOTO_SETS

    parser.add_argument("--photos", choices=PHOTO_SETS, default=None,
                        help="with no paths: bundled (the 7 photos of scikit-image and scikit-learn the "
                        "demo uses) or shipped (every photograph the installed scikit-image, scikit-learn "
                        "and matplotlib ship, 22 with current versions), read from those libraries "
                        "(default: bundled)")


def photo_set(args: argparse.Namespace) -> str:
    """The photo set the command reads when it has no paths; ``ValueError`` if ``--photos``
    comes with paths."""
    if args.photos is not None and args.paths:
        raise ValueError("--photos chooses the photos used when no paths are given; give paths or --photos, "
                         "not both")
    return args.photos or "bundled"


def collect_inputs(args: argparse.Namespace) -> list:
    """The dataset items of the command's paths, or with none of its photo set (``dataset.collect``)."""
    from ..data.dataset import collect

    return collect(args.paths, photo_set(args))
