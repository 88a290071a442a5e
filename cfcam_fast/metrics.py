"""Faithfulness, robustness and class-sensitivity metrics of CAM maps, batched on the device.

Every function returns one value per image, on the device of the images (or maps), and
calls the model in chunks of ``batch_size`` images, in eval mode and without gradients.
Confidence is the softmax probability of the target class; ``targets`` is ``None`` (the
model's arg-max class on the clean image), class indices, an integer ``[B]`` tensor, or
objects with a ``category`` attribute (the ``grad-cam`` package's ``ClassifierOutputTarget``).
Images are the tensors the model takes (normalised), so "zero" means the normalised zero.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .cam import BaseCAM
from .capture import capture, capture_classes, eval_mode
from .filters import gaussian_taps
from .metric_inputs import check_cam, check_classes, check_images, check_images_maps, class_indices, positive_int
from .road import road as road  # re-exported: metrics.road
from .sanity import randomization_sanity as randomization_sanity  # re-exported
from .similarity import pearson as pearson  # re-exported: metrics.pearson
from .similarity import ssim as ssim  # re-exported: metrics.ssim

THRESHOLD = 0.5  # the authors' variant of average drop keeps pixels whose map exceeds it
BLUR_SIGMA = 5.0  # standard deviation in pixels of the "blur" baseline of deletion/insertion


class DeletionInsertion(NamedTuple):
    """Areas under the deletion and insertion curves, ``[B]`` each (lower deletion and
    higher insertion are more faithful)."""

    deletion: torch.Tensor
    insertion: torch.Tensor


class ClassSensitivity(NamedTuple):
    """``class_sensitivity``'s result: ``correlation`` ``[B]`` (Pearson, lower is more
    class-sensitive; 1.0 when both maps are constant, e.g. zero everywhere, and 0.0 when
    exactly one is), ``constant_map`` ``[B, 2]`` (which map was constant, so that such cases
    are reported rather than hidden), ``classes`` ``[B, 2]`` and ``maps`` ``[B, 2, H, W]``."""

    correlation: torch.Tensor
    constant_map: torch.Tensor
    classes: torch.Tensor
    maps: torch.Tensor


def _probabilities(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax outputs ``[B, N]`` of the model, run in chunks of ``batch_size``."""
    with eval_mode(model), torch.no_grad():
        return torch.cat([torch.softmax(model(chunk).flatten(1).float(), dim=1)
                          for chunk in images.split(batch_size)])


def _confidence(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, batch_size: int) -> torch.Tensor:
    return _probabilities(model, images, batch_size).gather(1, classes[:, None])[:, 0]


def _target_classes(model, images, targets, batch_size) -> torch.Tensor:
    """The target classes ``[B]``: ``targets``, or the arg-max class on the clean images."""
    if targets is not None:
        return class_indices(targets, images.shape[0], images.device)
    return _probabilities(model, images, batch_size).argmax(1)


def _clean_confidence(model, images, targets, batch_size) -> tuple[torch.Tensor, torch.Tensor]:
    """The target classes ``[B]`` and their confidence on the clean images."""
    probs = _probabilities(model, images, batch_size)
    classes = probs.argmax(1) if targets is None else class_indices(targets, images.shape[0], images.device)
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


def confidence_change(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets=None, *,
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


def average_drop(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets=None, *,
                 variant: str = "multiply", batch_size: int = 64) -> torch.Tensor:
    """Average drop in percent, per image: ``100 * max(0, Y - O) / Y`` (Chattopadhay et al.).

    ``Y`` is the confidence on the image, ``O`` on the image multiplied by its map
    (``variant="multiply"``) or by the mask ``map > 0.5`` (``"threshold"``, the authors'
    variant). Lower is more faithful.
    """
    return confidence_change(model, images, maps, targets, variant=variant, batch_size=batch_size).average_drop


def increase_in_confidence(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets=None, *,
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


def deletion_insertion_curves(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets=None, *,
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


def deletion_insertion(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets=None, *,
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


def explain_captured(cam: BaseCAM, activations: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor],
                     output_size) -> torch.Tensor:
    """``cam``'s maps from given per-layer activations and gradients (``BaseCAM._core``),
    several layers combined as ``BaseCAM.explain`` combines them."""
    maps = [cam._core(a, g, output_size).maps for a, g in zip(activations, gradients)]
    if len(maps) == 1:
        return maps[0].float()
    mean = torch.stack(maps).mean(0).float()
    return mean / mean.flatten(1).amax(1).clamp_min(torch.finfo(mean.dtype).tiny)[:, None, None]


def robustness(cam: BaseCAM, images: torch.Tensor, targets=None, *, scales: Sequence[float], draws: int = 5,
               seed: int = 0) -> list[torch.Tensor]:
    """SSIM between each image's clean map and its map from noisy gradients, one ``[B]``
    tensor per scale (higher is more robust).

    The model runs once (one forward, one backward); then, for every scale ``s`` and each
    of ``draws`` draws, Gaussian noise of standard deviation ``s * std(G_b)`` (the raw
    gradients' own spread in image ``b``) is added to the raw gradients ``G`` and
    the CAM's core (for CF-CAM: from step 2 on) rebuilds the map. SSIMs are averaged over
    the draws; the noise comes from a generator seeded with ``seed`` on the images' device.
    """
    check_cam(cam)
    scales = list(scales)
    if not scales or any(not isinstance(s, (int, float)) or isinstance(s, bool) or s < 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of numbers >= 0, got {scales!r}")
    positive_int("draws", draws)
    captured = capture(cam.model, images, cam.target_layers, targets, cam.reshape_transform,
                       output_selector=cam.output_selector, layer_call=cam.layer_call)
    size = tuple(images.shape[-2:])
    acts, grads = captured.activations, captured.gradients
    clean = explain_captured(cam, acts, grads, size)
    gen = torch.Generator(device=images.device).manual_seed(seed)
    repeated = [a.repeat(draws, 1, 1, 1) for a in acts]
    result = []
    for scale in scales:
        noisy = []
        for g in grads:
            spread = g.flatten(1).std(1).reshape(1, -1, 1, 1, 1)
            noise = torch.randn((draws, *g.shape), generator=gen, device=g.device, dtype=g.dtype)
            noisy.append((g[None] + float(scale) * spread * noise).flatten(0, 1))
        maps = explain_captured(cam, repeated, noisy, size)
        result.append(ssim(clean.repeat(draws, 1, 1), maps).reshape(draws, -1).mean(0))
    return result


def _pair_classes(pair: str):
    if pair == "top-bottom":
        return lambda logits: torch.stack([logits.argmax(1), logits.argmin(1)], dim=1)
    if pair == "top-second":
        return lambda logits: logits.topk(2, dim=1).indices
    raise ValueError(f"pair must be 'top-bottom' or 'top-second', got {pair!r}")


def class_sensitivity(cam: BaseCAM, images: torch.Tensor, *, pair: str = "top-bottom",
                      batch_size: int = 64) -> ClassSensitivity:
    """Pearson correlation between each image's maps for two classes (after Rebuffi et al.,
    "There and Back Again", CVPR 2020); lower is more class-sensitive.

    ``pair="top-bottom"``: the most and the least likely class; ``"top-second"``: the two
    most likely. Per chunk of ``batch_size`` images the model runs one forward and one
    batched backward for both classes (``capture.capture_classes``).
    """
    check_cam(cam)
    positive_int("batch_size", batch_size)
    check_images(images)
    select = _pair_classes(pair)
    size = tuple(images.shape[-2:])
    parts = []
    for chunk in images.split(batch_size):
        got = capture_classes(cam.model, chunk, cam.target_layers, select, cam.reshape_transform,
                              output_selector=cam.output_selector, layer_call=cam.layer_call)
        acts = [a.repeat(2, 1, 1, 1) for a in got.activations]
        grads = [g.flatten(0, 1) for g in got.gradients]  # [2B, ...]: first class, then second
        maps = explain_captured(cam, acts, grads, size).reshape(2, chunk.shape[0], *size).transpose(0, 1)
        r, constant = pearson(maps[:, 0], maps[:, 1])
        parts.append((r, constant, got.class_idx, maps))
    return ClassSensitivity(*(torch.cat(p) for p in zip(*parts)))
