"""Grad-CAM and Grad-CAM++ on CF-CAM's capture, batched on the tensors' device.

Both share ``cfcam_fast.cam.BaseCAM`` (hooks, targets, one forward and one backward) and
docs/algorithm.md step 7's output rule (ReLU, bilinear upsampling, division by the maximum), so the
three methods differ only in the channel weights. They compute in float64, so activations
and gradients in float32's subnormal range keep their precision.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .cam import BaseCAM
from .config import CFCAMResult
from .core import check_captured

GRADCAM_PLUSPLUS_EPS = 1e-6  # the denominator guard of the grad-cam package's Grad-CAM++


def gradcam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's channel weights ``[B, C]``: the spatial mean of the gradients."""
    return gradients.mean(dim=(2, 3))


def gradcam_plusplus_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++'s channel weights ``[B, C]`` (Chattopadhay et al., eq. 19).

    With an exponential output the higher derivatives are powers of the gradient, so
    ``a = G^2 / (2 G^2 + sum(A) G^3 + 1e-6)`` (0 where ``G == 0``) and
    ``w_c = sum over positions of a * ReLU(G)``, as the ``grad-cam`` package computes it.
    """
    g2 = gradients * gradients
    g3 = g2 * gradients
    total = activations.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + total * g3 + GRADCAM_PLUSPLUS_EPS)
    alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
    return (alpha * gradients.clamp_min(0)).sum(dim=(2, 3))


def scaled_output(cam: torch.Tensor, output_size: Sequence[int] | None) -> torch.Tensor:
    """docs/algorithm.md step 7 for a non-negative ``[B, h, w]`` map: bilinear upsampling to
    ``output_size`` (the layer's size if ``None``) and division by the per-image maximum."""
    size = tuple(cam.shape[-2:]) if output_size is None else tuple(int(s) for s in output_size)
    cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(torch.finfo(cam.dtype).tiny)
    return cam / peak[:, None, None]  # a map that is zero everywhere stays zero


def weighted_map(activations: torch.Tensor, weights: torch.Tensor,
                 output_size: Sequence[int] | None) -> torch.Tensor:
    """docs/algorithm.md steps 6-7 for given weights: ``ReLU(sum_c w_c A_c)``, then
    ``scaled_output``."""
    return scaled_output(torch.einsum("bc,bchw->bhw", weights, activations).clamp_min(0), output_size)


def unclustered_result(maps: torch.Tensor, weights: torch.Tensor) -> CFCAMResult:
    """A ``CFCAMResult`` of a method without clusters: ``labels`` -2 (every channel kept),
    ``channel_weights`` and ``weights`` both ``weights`` ``[B, C]``, ``eps`` NaN."""
    B, C = weights.shape
    return CFCAMResult(maps=maps.float(), labels=torch.full((B, C), -2, dtype=torch.int64, device=maps.device),
                       channel_weights=weights.float(), weights=weights.float(),
                       eps=torch.full((B,), float("nan"), dtype=torch.float64, device=maps.device))


class _WeightedCAM(BaseCAM):
    """A CAM whose map is ``ReLU(sum_c w_c A_c)`` for weights from ``_weights``."""

    def _weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _core(self, activations: torch.Tensor, gradients: torch.Tensor, output_size) -> CFCAMResult:
        check_captured(activations, gradients)
        with torch.no_grad():
            A = activations.detach().double()
            G = gradients.detach().double()
            w = self._weights(A, G)
            return unclustered_result(weighted_map(A, w, output_size), w)


class GradCAM(_WeightedCAM):
    """Grad-CAM (Selvaraju et al.) with ``cf.CFCAM``'s call and result, and the constructor
    of ``cam.BaseCAM`` (``output_selector``; ``layer_call`` for a layer that runs more than
    once per forward, which is an error without it).

    ``labels`` are -2 (every channel kept), ``channel_weights`` and ``weights`` the mean
    gradients, ``eps`` NaN, ``plan`` None (no backend choice: torch on the tensors' device).
    """

    def _weights(self, activations, gradients):
        return gradcam_weights(activations, gradients)


class GradCAMPlusPlus(_WeightedCAM):
    """Grad-CAM++ (Chattopadhay et al.) with ``cf.CFCAM``'s call and result, and the
    constructor of ``cam.BaseCAM`` (``output_selector``; ``layer_call`` for a layer that runs
    more than once per forward, which is an error without it).

    ``channel_weights`` and ``weights`` are the Grad-CAM++ weights
    (``gradcam_plusplus_weights``); ``labels`` -2, ``eps`` NaN, ``plan`` None (no backend
    choice: torch on the tensors' device).
    """

    def _weights(self, activations, gradients):
        return gradcam_plusplus_weights(activations, gradients)
