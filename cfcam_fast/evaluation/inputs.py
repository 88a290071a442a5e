"""Argument checks the metrics share: seeds, CAMs, image and map batches, class targets."""
from __future__ import annotations

from typing import Any

import torch

from ..cams.base import BaseCAM


def check_seed(seed: Any) -> None:
    """``ValueError`` unless ``seed`` is an int."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")


def check_cam(cam: Any) -> None:
    """``ValueError`` unless ``cam`` is one of the package's CAMs (a ``cams.base.BaseCAM``)."""
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
