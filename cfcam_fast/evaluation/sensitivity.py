"""How CAM maps respond to their inputs: robustness to gradient noise and class sensitivity.

Both feed a CAM captured tensors it did not capture itself (noisy gradients, the gradients
of a second class), so they take the CAMs whose maps come from one capture alone
(``BaseCAM.captured_only``) and call ``BaseCAM.maps_from``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from ..cams.base import BaseCAM, required
from ..cams.capture import capture_classes
from ..cams.targets import Targets
from ..core.checks import positive_int
from .inputs import check_cam, check_images
from .similarity import pearson, ssim


class ClassSensitivity(NamedTuple):
    """``class_sensitivity``'s result: ``correlation`` ``[B]`` (Pearson, lower is more
    class-sensitive; 1.0 when both maps are constant, e.g. zero everywhere, and 0.0 when
    exactly one is), ``constant_map`` ``[B, 2]`` (which map was constant, so that such cases
    are reported rather than hidden), ``classes`` ``[B, 2]`` and ``maps`` ``[B, 2, H, W]``."""

    correlation: torch.Tensor
    constant_map: torch.Tensor
    classes: torch.Tensor
    maps: torch.Tensor


def explain_captured(cam: BaseCAM, activations: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor],
                     output_size: Sequence[int]) -> torch.Tensor:
    """``cam``'s maps from given per-layer activations and gradients: ``cam.maps_from``."""
    return cam.maps_from(activations, gradients, output_size)


def robustness(cam: BaseCAM, images: torch.Tensor, targets: Targets = None, *, scales: Sequence[float], draws: int = 5,
               seed: int = 0) -> list[torch.Tensor]:
    """SSIM between each image's clean map and its map from noisy gradients, one ``[B]``
    tensor per scale (higher is more robust).

    The model runs once (one forward, one backward); then, for every scale ``s`` and each
    of ``draws`` draws, Gaussian noise of standard deviation ``s * std(G_b)`` (the raw
    gradients' own spread in image ``b``) is added to the raw gradients ``G`` and
    the CAM's core (for CF-CAM: from step 2 on) rebuilds the map. SSIMs are averaged over
    the draws; the noise comes from a generator seeded with ``seed`` on the images' device.
    """
    _check_captured_only(cam, "robustness")
    scales = list(scales)
    if not scales or any(not isinstance(s, (int, float)) or isinstance(s, bool) or s < 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of numbers >= 0, got {scales!r}")
    positive_int("draws", draws)
    if not cam.needs_gradients:
        raise ValueError(f"robustness adds noise to the gradients, and {type(cam).__name__} uses none")
    captured = cam.capture(images, targets)
    size = tuple(images.shape[-2:])
    acts = captured.activations
    grads = [required(g, type(cam).__name__) for g in captured.gradients]
    clean = cam.maps_from(acts, grads, size)
    gen = torch.Generator(device=images.device).manual_seed(seed)
    repeated = [a.repeat(draws, 1, 1, 1) for a in acts]
    result = []
    for scale in scales:
        noisy = []
        for g in grads:
            spread = g.flatten(1).std(1).reshape(1, -1, 1, 1, 1)
            noise = torch.randn((draws, *g.shape), generator=gen, device=g.device, dtype=g.dtype)
            noisy.append((g[None] + float(scale) * spread * noise).flatten(0, 1))
        maps = cam.maps_from(repeated, noisy, size)
        result.append(ssim(clean.repeat(draws, 1, 1), maps).reshape(draws, -1).mean(0))
    return result


def _pair_classes(pair: str) -> Callable[[torch.Tensor], torch.Tensor]:
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
    _check_captured_only(cam, "class_sensitivity")
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
        maps = cam.maps_from(acts, grads, size).reshape(2, chunk.shape[0], *size).transpose(0, 1)
        r, constant = pearson(maps[:, 0], maps[:, 1])
        parts.append((r, constant, got.class_idx, maps))
    return ClassSensitivity(*(torch.cat(p) for p in zip(*parts)))


def _check_captured_only(cam: BaseCAM, metric: str) -> None:
    """``ValueError`` unless ``cam`` is a CAM whose maps come from one capture alone."""
    check_cam(cam)
    if not cam.captured_only:
        raise ValueError(f"{metric} feeds the CAM captured gradients, but {type(cam).__name__} runs the model "
                         "again for its maps; use a method whose maps come from one capture (CF-CAM, Grad-CAM, ...)")
