"""Faithfulness of CAM maps: confidence change under masking, deletion and insertion.

Every function returns one value per image, on the device of the images (or maps), and
calls the model in chunks of ``batch_size`` images, in eval mode and without gradients.
Confidence is the softmax probability of the target class; ``targets`` are classes as
``cams.targets`` parses them (``None``: the model's arg-max class on the clean image).
Images are the tensors the model takes (normalised), so "zero" means the normalised zero.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..cams.model_state import eval_mode
from ..cams.targets import Targets, class_indices
from ..core.checks import positive_int
from ..core.filters import gaussian_taps
from .inputs import check_classes, check_images_maps

THRESHOLD = 0.5  # the authors' variant of average drop keeps pixels whose map exceeds it
BLUR_SIGMA = 5.0  # standard deviation in pixels of the "blur" baseline of deletion/insertion


class DeletionInsertion(NamedTuple):
    """Areas under the deletion and insertion curves, ``[B]`` each (lower deletion and
    higher insertion are more faithful)."""

    deletion: torch.Tensor
    insertion: torch.Tensor


def _probabilities(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax outputs ``[B, N]`` of the model, run in chunks of ``batch_size``."""
    with eval_mode(model), torch.no_grad():
        return torch.cat([torch.softmax(model(chunk).flatten(1).float(), dim=1)
                          for chunk in images.split(batch_size)])


def _confidence(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, batch_size: int) -> torch.Tensor:
    return _probabilities(model, images, batch_size).gather(1, classes[:, None])[:, 0]


def _target_classes(model: nn.Module, images: torch.Tensor, targets: Targets, batch_size: int) -> torch.Tensor:
    """The target classes ``[B]``: ``targets``, or the arg-max class on the clean images."""
    classes = class_indices(targets, images.shape[0], images.device)
    return _probabilities(model, images, batch_size).argmax(1) if classes is None else classes


def _clean_confidence(model: nn.Module, images: torch.Tensor, targets: Targets,
                      batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The target classes ``[B]`` and their confidence on the clean images."""
    probs = _probabilities(model, images, batch_size)
    classes = class_indices(targets, images.shape[0], images.device)
    classes = probs.argmax(1) if classes is None else classes
    check_classes(classes, probs.shape[1])
    return classes, probs.gather(1, classes[:, None])[:, 0]


class ConfidenceChange(NamedTuple):
    """Confidences ``[B]`` on the images (``clean``) and on the map-masked images (``masked``);
    ``average_drop`` and ``increase`` derive from them as the functions of those names."""

    clean: torch.Tensor
    masked: torch.Tensor

    @property
    def average_drop(self) -> torch.Tensor:
        drop = (self.clean - self.masked).clamp_min(0)
        return 100.0 * drop / self.clean.clamp_min(torch.finfo(self.clean.dtype).tiny)

    @property
    def increase(self) -> torch.Tensor:
        return (self.masked > self.clean).to(self.clean.dtype)


def confidence_change(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Targets = None, *,
                      variant: str = "multiply", batch_size: int = 64) -> ConfidenceChange:
    """Confidence on each image and on the image multiplied by its map (``"multiply"``) or by
    the mask ``map > 0.5`` (``"threshold"``): both of ``average_drop`` and
    ``increase_in_confidence`` from one pass over the model."""
    positive_int("batch_size", batch_size)
    check_images_maps(images, maps)
    if variant not in ("multiply", "threshold"):
        raise ValueError(f"variant must be 'multiply' or 'threshold', got {variant!r}")
    classes, clean = _clean_confidence(model, images, targets, batch_size)
    mask = maps if variant == "multiply" else (maps > THRESHOLD).to(images.dtype)
    masked = _confidence(model, images * mask[:, None].to(images.dtype), classes, batch_size)
    return ConfidenceChange(clean, masked)


def average_drop(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Targets = None, *,
                 variant: str = "multiply", batch_size: int = 64) -> torch.Tensor:
    """Average drop in percent, per image: ``100 * max(0, Y - O) / Y`` (Chattopadhay et al.).

    ``Y`` is the confidence on the image, ``O`` on the image multiplied by its map
    (``variant="multiply"``) or by the mask ``map > 0.5`` (``"threshold"``, the authors'
    variant). Lower is more faithful.
    """
    return confidence_change(model, images, maps, targets, variant=variant, batch_size=batch_size).average_drop


def increase_in_confidence(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Targets = None, *,
                           variant: str = "multiply", batch_size: int = 64) -> torch.Tensor:
    """1.0 where the masked image (as in ``average_drop``) is more confident than the image, else 0.0."""
    return confidence_change(model, images, maps, targets, variant=variant, batch_size=batch_size).increase


def blur(images: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """A separable Gaussian blur of ``[B, C, H, W]`` images (edge pixels replicated)."""
    taps = gaussian_taps(sigma, dtype=images.dtype, device=images.device)
    r = taps.numel() // 2
    B, C, H, W = images.shape
    x = images.reshape(B * C, 1, H, W)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), taps.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), taps.view(1, 1, -1, 1))
    return x.reshape(B, C, H, W)


class Curves(NamedTuple):
    """Deletion and insertion curves: confidences ``[B, steps + 1]`` at the perturbed
    ``fractions`` ``[steps + 1]`` of the pixels."""

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor


def deletion_insertion_curves(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Targets = None, *,
                              steps: int = 100, baseline: str = "zero", batch_size: int = 64) -> Curves:
    """The curves behind ``deletion_insertion`` (same arguments)."""
    positive_int("batch_size", batch_size)
    check_images_maps(images, maps)
    positive_int("steps", steps)
    if baseline not in ("zero", "blur"):
        raise ValueError(f"baseline must be 'zero' or 'blur', got {baseline!r}")
    B, C = images.shape[:2]
    N = maps[0].numel()
    classes = _target_classes(model, images, targets, batch_size)
    base = torch.zeros_like(images) if baseline == "zero" else blur(images)
    order = torch.argsort(maps.flatten(1), dim=1, descending=True, stable=True)
    ranks = torch.argsort(order, dim=1)
    counts = torch.arange(steps + 1, device=images.device) * N // steps
    flat_images, flat_base = images.flatten(2), base.flatten(2)
    # Job j: image j // (2 (steps + 1)), curve (deletion 0, insertion 1), step.
    jobs = torch.arange(B * 2 * (steps + 1), device=images.device)
    image_of, curve_of, step_of = jobs // (2 * (steps + 1)), (jobs // (steps + 1)) % 2, jobs % (steps + 1)
    scores = []
    with eval_mode(model), torch.no_grad():
        for chunk in jobs.split(batch_size):
            b, curve, step = image_of[chunk], curve_of[chunk], step_of[chunk]
            top = ranks[b] < counts[step][:, None]  # [n, N]: the pixels perturbed at this step
            from_image = torch.where(curve[:, None] == 0, ~top, top)[:, None]
            x = torch.where(from_image, flat_images[b], flat_base[b]).reshape(-1, C, *images.shape[2:])
            probs = torch.softmax(model(x).flatten(1).float(), dim=1)
            check_classes(classes, probs.shape[1])
            scores.append(probs.gather(1, classes[b][:, None])[:, 0])
    curves = torch.cat(scores).reshape(B, 2, steps + 1)
    return Curves(counts.to(curves.dtype) / N, curves[:, 0], curves[:, 1])


def deletion_insertion(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Targets = None, *,
                       steps: int = 100, baseline: str = "zero", batch_size: int = 64) -> DeletionInsertion:
    """Deletion and insertion areas per image (Petsiuk et al., RISE).

    Pixels are ranked by their map value, highest first (ties by position). Step ``i`` of
    ``0..steps`` perturbs the first ``floor(i * HW / steps)`` of them: deletion replaces them
    by the baseline in the image, insertion puts them from the image into the baseline
    (``"zero"``, or ``"blur"``: the image blurred with ``sigma = 5`` px). Each curve of
    confidences (``deletion_insertion_curves``) is integrated (trapezoids) over the
    perturbed fraction in ``[0, 1]``.
    """
    fractions, deletion, insertion = deletion_insertion_curves(model, images, maps, targets, steps=steps,
                                                               baseline=baseline, batch_size=batch_size)
    return DeletionInsertion(torch.trapezoid(deletion, fractions, dim=-1),
                             torch.trapezoid(insertion, fractions, dim=-1))
