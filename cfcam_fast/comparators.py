"""Comparator CAMs on the package's capture: EigenCAM, ScoreCAM and NormGrad.

Each has ``cam.BaseCAM``'s constructor and call (``cam(x, targets)`` gives ``[B, H, W]``
float32 maps in ``[0, 1]``; ``cam.explain`` a ``CFCAMResult`` with ``labels`` -2 and ``eps``
NaN), computes batched in float64 on the tensors' device and ends with docs/algorithm.md
step 7's output rule (ReLU, bilinear upsampling, division by the per-image maximum).
EigenCAM and ScoreCAM are gradient-free: one forward without a backward
(``capture.capture_forward``), plus ScoreCAM's masked forwards. Smooth Grad-CAM++ is in
``cfcam_fast.smooth_gradcam``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .baselines import scaled_output, unclustered_result, weighted_map
from .cam import BaseCAM, combine_layers
from .capture import Captured, Targets, _logits, capture_forward, eval_mode
from .config import CFCAMResult
from .core import check_captured
from .metric_inputs import positive_int

SCORECAM_EPS = 1e-8  # the denominator guard of the grad-cam package's mask normalisation


def per_image_targets(targets: Targets, class_idx: torch.Tensor) -> list:
    """One target per image for later forwards of copies of it: the image's callable
    target where one was given, else its explained class as an int."""
    classes = class_idx.tolist()
    if targets is None or isinstance(targets, torch.Tensor):
        return classes
    return [t if callable(t) else c for t, c in zip(targets, classes)]


class _ForwardCAM(BaseCAM):
    """A gradient-free CAM: one forward under ``torch.no_grad`` and no backward pass, so
    unlike the gradient CAMs it also runs under ``torch.inference_mode()``."""

    def explain(self, x: torch.Tensor, targets: Targets = None) -> CFCAMResult:
        """The maps with the weights, the explained classes and the logits (``BaseCAM.explain``)."""
        captured = capture_forward(self.model, x, self.target_layers, targets, self.reshape_transform,
                                   output_selector=self.output_selector, layer_call=self.layer_call)
        size = tuple(x.shape[-2:])
        results = [self._forward_core(x, a, captured, targets, size) for a in captured.activations]
        return combine_layers(results, captured, x)

    def _forward_core(self, x: torch.Tensor, activations: torch.Tensor, captured: Captured,
                      targets: Targets, output_size) -> CFCAMResult:
        raise NotImplementedError


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


class EigenCAM(_ForwardCAM):
    """EigenCAM (Muhammad and Yeasin, 2020) as grad-cam's ``EigenCAM``, forward-only.

    The map is ``ReLU`` of the projection of the channel-centred activations ``[hw, C]`` on
    their first right singular vector ``v`` (grad-cam's ``get_2d_projection``), then the
    output rule. ``targets`` do not change the map (only ``class_idx``). grad-cam keeps
    whatever sign its SVD returns; here ``v`` is oriented as ``eigen_projection`` says, so
    where grad-cam's SVD returns the other sign its map is ``ReLU`` of the negated one.
    ``channel_weights`` and ``weights``: the oriented ``v``; the map before ``ReLU`` is
    ``sum_c v_c (A_c - mean(A_c))``.
    """

    def _forward_core(self, x, activations, captured, targets, output_size) -> CFCAMResult:
        check_captured(activations, activations)
        with torch.no_grad():
            proj, v = eigen_projection(activations.detach().double())
            return unclustered_result(scaled_output(proj.clamp_min(0), output_size), v)


class ScoreCAM(_ForwardCAM):
    """Score-CAM (Wang et al., 2020) as grad-cam's ``ScoreCAM``, gradient-free.

    Each channel ``A_c`` is upsampled to the input size (bilinear with
    ``align_corners=True``, as grad-cam's ``UpsamplingBilinear2d``), min-max normalised to
    ``M_c = (U_c - min) / (max - min + 1e-8)`` and multiplied into the image; the target
    scores of the ``C`` masked images, softmaxed over the channels, are the weights ``w``,
    and the map is ``ReLU(sum_c w_c A_c)`` with the output rule. ``targets`` as in
    ``BaseCAM``: ``None`` scores the unmasked image's arg-max class.

    ``batch_size``: masked images per forward (grad-cam's attribute of the same name);
    masks are built one chunk at a time, so memory grows with it and not with ``B * C``.
    The masked forwards run on the input's device under ``torch.no_grad`` with the model in
    eval mode; its state is left as it was.
    """

    def __init__(self, model: nn.Module, target_layers: Sequence[nn.Module],
                 reshape_transform: Callable | None = None, *, batch_size: int = 32,
                 output_selector: Callable | None = None, layer_call: int | None = None) -> None:
        super().__init__(model, target_layers, reshape_transform, output_selector=output_selector,
                         layer_call=layer_call)
        self.batch_size = positive_int("batch_size", batch_size)

    def _forward_core(self, x, activations, captured, targets, output_size) -> CFCAMResult:
        check_captured(activations, activations)
        A = activations.detach().double()
        w = self._score_weights(x, A, per_image_targets(targets, captured.class_idx))
        with torch.no_grad():
            return unclustered_result(weighted_map(A, w, output_size), w)

    def _score_weights(self, x: torch.Tensor, A: torch.Tensor, targets: list) -> torch.Tensor:
        """The softmaxed target scores ``[B, C]`` of the masked images, in chunks."""
        B, C = A.shape[:2]
        x = x.detach()
        channels = A.flatten(0, 1)[:, None].to(x.device)  # [B C, 1, h, w]
        scores = torch.empty(B * C, dtype=torch.float64, device=x.device)
        with eval_mode(self.model), torch.no_grad():
            for start in range(0, B * C, self.batch_size):
                stop = min(start + self.batch_size, B * C)
                up = F.interpolate(channels[start:stop], size=x.shape[-2:], mode="bilinear", align_corners=True)
                lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
                masks = (up - lo) / (hi - lo + SCORECAM_EPS)
                image = torch.arange(start, stop, device=x.device) // C
                out = self.model(x[image] * masks.to(x.dtype))
                logits = _logits(out, self.output_selector).flatten(1)
                scores[start:stop] = _row_scores(logits, [targets[b] for b in image.tolist()])
        return torch.softmax(scores.view(B, C), dim=1)


def _row_scores(logits: torch.Tensor, targets: list) -> torch.Tensor:
    """Each row's target score: its class's logit, or its callable target's value."""
    if not any(callable(t) for t in targets):
        idx = torch.tensor(targets, dtype=torch.int64, device=logits.device)
        return logits.gather(1, idx[:, None])[:, 0].double()
    return torch.stack([(t(row) if callable(t) else row[t]).reshape(()) for t, row in zip(targets, logits)]).double()


class NormGrad(BaseCAM):
    """NormGrad (Rebuffi et al., "There and Back Again", CVPR 2020) at a single layer.

    A virtual identity ``1x1`` convolution after the target layer has the weight gradient
    ``sum_u G_u A_u^T`` over positions ``u``; NormGrad's map is the norm of each position's
    term, ``||G_u A_u^T||_F = ||A_u||_2 * ||G_u||_2``, the norms taken over the channels
    (TorchRay's ``norm_grad``). It is non-negative, so the output rule's ReLU is a no-op.
    One forward and one backward as ``cf.GradCAM``; ``channel_weights`` and ``weights`` are
    NaN (the map has no channel weights), ``labels`` -2, ``eps`` NaN.
    """

    def _core(self, activations, gradients, output_size) -> CFCAMResult:
        check_captured(activations, gradients)
        with torch.no_grad():
            A, G = activations.detach().double(), gradients.detach().double()
            cam = torch.linalg.vector_norm(A, dim=1) * torch.linalg.vector_norm(G, dim=1)
            nan = torch.full(A.shape[:2], float("nan"), dtype=torch.float64, device=A.device)
            return unclustered_result(scaled_output(cam, output_size), nan)
