"""ImageNet's input normalisation: the one place its mean and standard deviation live."""
from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """``(pixels - mean) / std`` per channel, for RGB values in ``[0, 1]`` laid out as
    ``[..., 3, H, W]``, in the pixels' dtype and device."""
    shape = (3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=pixels.dtype, device=pixels.device).view(shape)
    std = torch.tensor(IMAGENET_STD, dtype=pixels.dtype, device=pixels.device).view(shape)
    return (pixels - mean) / std
