"""ROAD on a batch, ``cfcam_fast.metrics.road`` against the ``grad-cam`` package's ROAD.

    python -m bench.road [--images 64] [--gradcam-images 64] [--order morf] [--device cpu]

torchvision's ResNet-50 (random weights, seeded; eval mode), random 224x224 inputs and
smooth random maps (7x7 noise upsampled bilinearly, as a CAM of the last stage looks),
the nine percentiles 10..90, ``noise=0.01``, logit scores (grad-cam's
``ClassifierOutputTarget``). grad-cam runs image by image on the CPU with SciPy; when its
run would take too long, ``--gradcam-images`` times it on fewer images and the per-image
time is compared. Each side runs once (no warm-up: both are dominated by the solver).
Prints a markdown table: seconds per batch, seconds per image, speedup.
"""
from __future__ import annotations

import argparse
import platform
import time
from importlib.metadata import version

import numpy as np
import torch
import torch.nn.functional as F


def inputs(count: int, size: int = 224, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[count, 3, size, size]`` and smooth maps ``[count, size, size]`` in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(count, 3, size, size, generator=gen)
    coarse = torch.rand(count, 1, 7, 7, generator=gen)
    maps = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return images, maps


def gradcam_road(model, images: torch.Tensor, maps: torch.Tensor, classes: list[int], order: str) -> np.ndarray:
    """grad-cam's ROAD average over the nine percentiles (its default noise, 0.01)."""
    from pytorch_grad_cam.metrics.road import ROADCombined, ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    metric = {"morf": ROADMostRelevantFirstAverage, "lerf": ROADLeastRelevantFirstAverage,
              "combined": ROADCombined}[order]()
    return metric(images, maps.numpy(), [ClassifierOutputTarget(c) for c in classes], model)


def main(argv: list[str] | None = None) -> None:
    import torchvision

    import cfcam_fast as cf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--gradcam-images", type=int, default=64)
    parser.add_argument("--order", choices=("morf", "lerf", "combined"), default="morf")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    images, maps = inputs(args.images)
    with torch.no_grad():
        classes = model(images[: args.gradcam_images]).argmax(1).tolist()

    device = torch.device(args.device)
    model_dev, images_dev, maps_dev = model.to(device), images.to(device), maps.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    cf.metrics.road(model_dev, images_dev, maps_dev, order=args.order, score="logit", batch_size=args.batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    ours = time.perf_counter() - start

    model.cpu()
    start = time.perf_counter()
    gradcam_road(model, images[: args.gradcam_images], maps[: args.gradcam_images], classes, args.order)
    theirs = time.perf_counter() - start

    print(f"ROAD ({args.order}, 9 percentiles), ResNet-50 (random weights) at 224x224, "
          f"{torch.get_num_threads()} torch threads; torch {torch.__version__}, grad-cam {version('grad-cam')}, "
          f"{platform.machine()}")
    print()
    print("| implementation | device | images | s per batch | s per image | speedup |")
    print("|---|---|---|---|---|---|")
    per_ours, per_theirs = ours / args.images, theirs / args.gradcam_images
    print(f"| grad-cam (SciPy spsolve, image by image) | cpu | {args.gradcam_images} | {theirs:.1f} | "
          f"{per_theirs:.2f} | 1.0x |")
    print(f"| cfcam_fast.metrics.road (batched CG, batch_size {args.batch_size}) | {device} | {args.images} | "
          f"{ours:.1f} | {per_ours:.2f} | {per_theirs / per_ours:.2f}x |")


if __name__ == "__main__":
    main()
