"""docs/algorithm.md steps 6-7 as every CAM finishes: the weighted sum, upsampling and
normalisation, and the mean over several target layers."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def normalise(cam: torch.Tensor) -> torch.Tensor:
    """Each ``[..., H, W]`` map divided by its maximum when that is positive; a map whose
    maximum is 0 (or below) is returned as it is, so zeros stay zeros (step 7)."""
    peak = cam.flatten(-2).amax(-1)[..., None, None]
    return torch.where(peak > 0, cam / torch.where(peak > 0, peak, 1.0), cam)


def upsample_and_normalise(cam: torch.Tensor, output_size: Sequence[int] | None) -> torch.Tensor:
    """Step 7 for non-negative ``[B, h, w]`` maps: bilinear upsampling to ``output_size``
    (``interpolate(align_corners=False)``; the maps' own size if ``None``), then
    ``normalise``."""
    size = tuple(cam.shape[-2:]) if output_size is None else tuple(int(s) for s in output_size)
    cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return normalise(cam)


def weighted_map(activations: torch.Tensor, weights: torch.Tensor,
                 output_size: Sequence[int] | None) -> torch.Tensor:
    """Steps 6-7 for given weights ``[B, C]``: ``ReLU(sum_c w_c A_c)``, then
    ``upsample_and_normalise``."""
    cam = torch.einsum("bc,bchw->bhw", weights, activations).clamp_min(0)
    return upsample_and_normalise(cam, output_size)


def mean_of_layers(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Several target layers' ``[B, H, W]`` maps as one: their mean, normalised again
    (``normalise``); one layer's maps are returned unchanged."""
    if len(maps) == 1:
        return maps[0]
    return normalise(torch.stack(list(maps)).mean(0))
