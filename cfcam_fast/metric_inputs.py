"""Argument checks the metrics share: batch sizes, image and map batches, class targets."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def check_batch_size(batch_size: int) -> None:
    """``ValueError`` unless ``batch_size`` is an int >= 1."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")


def check_images_maps(images: torch.Tensor, maps: torch.Tensor) -> None:
    """``ValueError`` unless ``images`` is ``[B, C, H, W]`` and ``maps`` ``[B, H, W]`` beside it."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a [B, C, H, W] tensor, got {getattr(images, 'shape', type(images))}")
    expected = (images.shape[0], *images.shape[2:])
    if not isinstance(maps, torch.Tensor) or tuple(maps.shape) != expected:
        raise ValueError(f"maps must be a [B, H, W] tensor matching the images, i.e. {expected}; "
                         f"got {tuple(getattr(maps, 'shape', ()))}")
    if maps.device != images.device:
        raise ValueError(f"maps ({maps.device}) and images ({images.device}) must be on the same device")


def class_indices(targets, batch: int, device: torch.device) -> torch.Tensor:
    """One class index per image from ints, an integer tensor or objects with a ``category``."""
    if isinstance(targets, torch.Tensor):
        if targets.dim() != 1 or targets.is_floating_point():
            raise ValueError(f"targets tensor must be an integer [B] tensor, got {targets.dtype} "
                             f"{tuple(targets.shape)}")
        idx = targets.to(device, torch.int64)
    else:
        if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
            raise ValueError("targets must be None, class indices, an integer tensor, or objects with "
                             f"a 'category' attribute; got {type(targets).__name__}")
        values = []
        for t in targets:
            t = getattr(t, "category", t)
            if isinstance(t, bool) or not hasattr(t, "__index__"):
                raise ValueError(f"each target must be a class index (or have a 'category'), got {t!r}")
            values.append(int(t))
        idx = torch.tensor(values, dtype=torch.int64, device=device)
    if idx.shape[0] != batch:
        raise ValueError(f"got {idx.shape[0]} targets for a batch of {batch} images; give one per image")
    return idx
