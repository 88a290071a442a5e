"""``cfcam-fast export``: the real-time frame of a model as a deployable artefact.

``--out model.onnx`` writes an ONNX model (opset 18; needs the ``[onnx]`` extra) that
onnxruntime runs without torch or this package; ``--out model.pt2`` an AOTInductor package
that ``torch._inductor.aoti_load_package`` (or libtorch) loads without the model's code.
Either takes one ``[--batch, 3, --size, --size]`` float32 input, normalised as for the model,
and returns ``logits``, ``class_idx`` and ``maps`` (docs/export.md). Only models whose head
after the target layer is proven to be global average pooling + linear export; any other
is an error that names the head and the reason.
"""
from __future__ import annotations

import argparse
import warnings

import torch

from . import argtypes
from .options import Target, add_model_arguments, load_target

HELP = "write the real-time CF-CAM (or Grad-CAM) frame of a model as an ONNX model or an AOTInductor package"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``export``."""
    from ..cams.export import EXTRA_OUTPUTS
    from ..cams.realtime import METHODS
    from ..core.config import FILTERS, WEIGHTINGS

    add_model_arguments(parser)
    parser.add_argument("--size", type=argtypes.integer(1), default=224,
                        help="side in pixels of the input the frame is built for (default: 224)")
    parser.add_argument("--batch", type=argtypes.integer(1), default=1,
                        help="images per call, fixed in the artefact (default: 1)")
    parser.add_argument("--method", choices=METHODS, default="cfcam",
                        help="cfcam, or gradcam: Grad-CAM's map (CAM, for these heads), the baseline (default: cfcam)")
    parser.add_argument("--filter", choices=FILTERS, default="gaussian",
                        help="cluster-gradient filter (default: gaussian, the paper's)")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default="softmax",
                        help="channel weighting (default: softmax, the authors')")
    parser.add_argument("--targets", type=argtypes.integers(0),
                        help="comma-separated classes to explain, one per image of the batch or one for all, "
                        "fixed in the artefact (default: each image's top class)")
    parser.add_argument("--extra-outputs", default="",
                        help=f"comma-separated outputs to add after logits, class_idx and maps: "
                        f"{', '.join(EXTRA_OUTPUTS)} (default: none)")
    parser.add_argument("--out", required=True, help="the artefact: a path ending in .onnx or .pt2")


def run(args: argparse.Namespace) -> int:
    """Build the frame on the CPU, export it and say what was written."""
    from ..cams.export import format_of
    from ..cams.realtime import RealtimeCFCAM
    from ..core.config import CFCAMConfig

    kind = format_of(args.out)  # a wrong suffix is refused before any model is loaded
    extras = tuple(e.strip() for e in args.extra_outputs.split(",") if e.strip())
    # No --reshape here: load_target's check_layer refuses a layer whose output is not [B, C, H, W].
    target: Target = load_target(args, torch.device("cpu"), args.size)
    targets = None
    if args.targets is not None:
        targets = args.targets[0] if len(args.targets) == 1 else list(args.targets)
    example = torch.zeros(args.batch, 3, args.size, args.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a head that cannot run forward-only: export says why
        rt = RealtimeCFCAM(target.model, target.layer, example,
                           CFCAMConfig(filter=args.filter, weighting=args.weighting), targets, method=args.method)
    info = rt.export(args.out, extra_outputs=extras)
    seconds = sum(v for k, v in info.timings.items() if k.endswith("_s"))
    print(f"wrote {info.path} ({kind}, {info.timings['bytes'] / 1e6:.1f} MB, {seconds:.0f} s): {args.method} of "
          f"{args.model} at {target.layer_name}, input [{args.batch}, 3, {args.size}, {args.size}], outputs "
          f"{', '.join(info.output_names)}")
    return 0
