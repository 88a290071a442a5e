"""EigenCAM (Muhammad and Yeasin, 2020) as grad-cam's ``EigenCAM``: forward only."""
from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from ..core.checks import check_captured
from ..core.config import CFCAMResult
from ..core.output import upsample_and_normalise
from .base import BaseCAM


def eigen_projection(activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``[B, h, w]`` projections of each image's channel-centred activations on their
    first principal component, and the ``[B, C]`` unit component ``v``.

    Signs: a principal component's sign is arbitrary, so ``v`` is oriented such that the
    projection's largest value outweighs its most negative one (``max + min >= 0``, the
    sign correction of Seg-Eigen-CAM, ``get_2d_projection_with_sign_correction`` in
    grad-cam); on an exact tie, the largest-magnitude entry of ``v`` is positive.
    """
    B, C, h, w = activations.shape
    X = activations.flatten(2).transpose(1, 2)  # [B, hw, C]
    X = X - X.mean(dim=1, keepdim=True)
    v = torch.linalg.svd(X, full_matrices=False).Vh[:, 0, :]  # [B, C]
    proj = torch.einsum("bpc,bc->bp", X, v)
    balance = proj.amax(1) + proj.amin(1)
    lead = v.gather(1, v.abs().argmax(1, keepdim=True))[:, 0]
    sign = torch.where((balance < 0) | ((balance == 0) & (lead < 0)), -1.0, 1.0).to(v.dtype)
    return (proj * sign[:, None]).reshape(B, h, w), v * sign[:, None]


class EigenCAM(BaseCAM):
    """EigenCAM as grad-cam's ``EigenCAM``: one forward pass, no backward.

    The map is ``ReLU`` of the projection of the channel-centred activations ``[hw, C]`` on
    their first right singular vector ``v`` (grad-cam's ``get_2d_projection``), then the
    output rule, computed in float64. ``targets`` do not change the map (only
    ``class_idx``). grad-cam keeps whatever sign its SVD returns; here ``v`` is oriented as
    ``eigen_projection`` says, so where grad-cam's SVD returns the other sign its map is
    ``ReLU`` of the negated one. ``channel_weights`` and ``weights``: the oriented ``v``;
    the map before ``ReLU`` is ``sum_c v_c (A_c - mean(A_c))``.
    """

    needs_gradients: ClassVar[bool] = False

    def _core(self, activations: torch.Tensor, gradients: torch.Tensor | None,
              output_size: Sequence[int]) -> CFCAMResult:
        check_captured(activations, activations)
        with torch.no_grad():
            proj, v = eigen_projection(activations.detach().double())
            return CFCAMResult.without_clusters(upsample_and_normalise(proj.clamp_min(0), output_size), v)
