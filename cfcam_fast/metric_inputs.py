"""Argument checks the metrics and the comparator CAMs share: counts, seeds, CAMs, image and
map batches, class targets."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def positive_int(name: str, value) -> int:
    """``value`` if it is an int >= 1, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def check_seed(seed) -> None:
    """``ValueError`` unless ``seed`` is an int."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")


def check_cam(cam) -> None:
    """``ValueError`` unless ``cam`` is one of the package's CAMs (a ``cam.BaseCAM``)."""
    from .cam import BaseCAM

    if not isinstance(cam, BaseCAM):
        raise ValueError(f"cam must be a cfcam_fast CAM (CFCAM, GradCAM, GradCAMPlusPlus), got {type(cam).__name__}")


def check_images(images: torch.Tensor) -> None:
    """``ValueError`` unless ``images`` is a ``[B, C, H, W]`` tensor."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a [B, C, H, W] tensor, got {getattr(images, 'shape', type(images))}")


def check_images_maps(images: torch.Tensor, maps: torch.Tensor) -> None:
    """``ValueError`` unless ``images`` is ``[B, C, H, W]`` and ``maps`` ``[B, H, W]`` beside it."""
    check_images(images)
    expected = (images.shape[0], *images.shape[2:])
    if not isinstance(maps, torch.Tensor) or tuple(maps.shape) != expected:
        raise ValueError(f"maps must be a [B, H, W] tensor matching the images, i.e. {expected}; "
                         f"got {tuple(getattr(maps, 'shape', ()))}")
    if maps.device != images.device:
        raise ValueError(f"maps ({maps.device}) and images ({images.device}) must be on the same device")


def check_classes(classes: torch.Tensor, count: int) -> None:
    """``ValueError`` unless every class index lies in ``[0, count)`` (one host synchronisation)."""
    if bool(((classes < 0) | (classes >= count)).any()):
        raise ValueError(f"target classes must lie in [0, {count}), got {classes.tolist()}")


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
