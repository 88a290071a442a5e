"""CF-CAM and Grad-CAM on captured tensors, with every shape fixed at construction and
nothing but standard operators: the core of an exported frame.

``StaticCore(config, channels)`` computes what ``torch_backend.explain`` computes for
``RealtimeCFCAM`` (core torch, fixed shapes), step for step, with the exportable pieces of
this package in place of the compiled ops:

1. **Scaling.** The torch backend's per-image power-of-two rescaling (``scaling``), bit
   for bit, so every later stage sees the same float32 values.
2. **Importance split (step 2).** Norms in float64 (``torch.linalg.vector_norm``, as the
   torch backend), the percentile by NumPy's linear rule, compared ``>=``. Exported
   runtimes may sum a norm in another order (a few ulp, ~1e-16 relative): a split could
   differ only if two *distinct* channel norms at the split lie that close to each other
   (equal channels, e.g. dead ones, give equal sums in any order).
3. **eps and neighbours (steps 3-4).** ``n = max_remaining(C, q)`` slots hold each image's
   channels below the split; ``decisions`` decides on exactly the reference's distances.
4. **DBSCAN (step 4).** ``hooking``, integer-only.
5. **Steps 5-7.** The torch backend's ``channel_weights`` and ``combine``, unchanged.

``method="gradcam"``: Grad-CAM's map, ``ReLU(sum_c mean(G_c) A_c)`` upsampled and
normalised (``core.output.weighted_map``), on the same rescaled float32 values (the map is
positively homogeneous in the activations and in the weights before its normalisation).

A static graph cannot raise: images with non-finite activations or gradients get NaN maps
(``finite_images``: not ``core.checks.finite_images``, whose max and min reductions
propagate NaN in PyTorch but not in ONNX Runtime).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..backends.torch_backend import (
    SCALE_EXPONENT,
    _divide,
    channel_weights,
    combine,
    importance_split,
    max_remaining,
)
from ..config import CFCAMConfig
from ..formulas import min_samples_for
from ..output import weighted_map
from .decisions import Pairs, certified_decisions, exact_decisions, pairs_of
from .hooking import LOOPS, dbscan_labels
from .scaling import Powers
from .tracing import cond

METHODS = ("cfcam", "gradcam")
DISTANCES = ("certified", "exact")


def finite_images(*tensors: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: image ``b`` is finite in every one of ``tensors`` (``isfinite`` on
    every value, which every runtime defines alike)."""
    return torch.stack([torch.isfinite(t).flatten(1).all(1) for t in tensors]).all(0)


class StaticCore(nn.Module):
    """CF-CAM (or Grad-CAM) of ``[B, C, h, w]`` activations and gradients, ``C`` fixed.

    ``forward(A, G)`` returns ``maps`` ``[B, H, W]`` (float32 in [0, 1] at ``output_size``),
    ``labels`` ``[B, C]`` (int64: -2 important, -1 noise, >= 0 cluster), ``eps`` ``[B]``
    (float64) and ``certified`` (a bool scalar: the certified stage decided, not the exact
    fallback). For Grad-CAM the labels are -2, eps NaN and ``certified`` False.

    ``distances``: ``"certified"`` (one matrix product, exact fallback) or ``"exact"``;
    ``loop``: ``"while"`` or ``"unrolled"`` (``hooking``).
    """

    pair_iu: torch.Tensor
    pair_ju: torch.Tensor
    pair_flat: torch.Tensor

    def __init__(self, config: CFCAMConfig, channels: int, output_size: Sequence[int], *,
                 method: str = "cfcam", distances: str = "certified", loop: str = "while") -> None:
        super().__init__()
        for name, value, allowed in (("method", method, METHODS), ("distances", distances, DISTANCES),
                                     ("loop", loop, LOOPS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.config, self.channels, self.method = config, channels, method
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.distances, self.loop = distances, loop
        self.n = max_remaining(channels, config.importance_percentile)
        self.powers = Powers()
        # The static pair list as buffers, so that moving the core moves it once (not per call).
        self.ranks: tuple[int, int] | None = None
        if self.n >= 2:
            pairs = pairs_of(self.n, config.eps_percentile)
            self.ranks = (pairs.r0, pairs.r1)
            for name in ("iu", "ju", "flat"):
                self.register_buffer(f"pair_{name}", getattr(pairs, name), persistent=False)

    def forward(self, activations: torch.Tensor,
                gradients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        A, G = activations.float(), gradients.float()
        B, C = A.shape[:2]
        if C != self.channels:
            raise ValueError(f"this core was built for {self.channels} channels, got {C}")
        powers = self.powers
        a_shift = SCALE_EXPONENT - powers.peak_exponent(A)
        g_shift = (SCALE_EXPONENT - powers.peak_exponent(G)).clamp(min=0)
        A, G = powers.times_pow2(A, a_shift), powers.times_pow2(G, g_shift)
        if self.method == "gradcam":
            w = G.mean((2, 3))
            w = powers.times_pow2(w, SCALE_EXPONENT - powers.peak_exponent(w))
            maps = weighted_map(A, w, self.output_size)
            labels = torch.full((B, C), -2, dtype=torch.int64, device=A.device)
            eps = torch.full((B,), math.nan, dtype=torch.float64, device=A.device)
            certified = torch.zeros((), dtype=torch.bool, device=A.device)
        else:
            floor = self.config.eps_floor * powers.pow2(a_shift)
            labels, eps, certified = self.cluster(A, floor)
            w_scaled = channel_weights(G, labels, self.config, slots=C)
            if self.config.weighting == "softmax":  # not scale-invariant: the weights as they are
                maps, _ = combine(A, _divide(w_scaled, powers.pow2(g_shift)), labels, "softmax", self.output_size)
            else:
                w_shift = SCALE_EXPONENT - powers.peak_exponent(w_scaled)
                maps, _ = combine(A, powers.times_pow2(w_scaled, w_shift), labels, self.config.weighting,
                                  self.output_size)
            eps = eps / powers.pow2(a_shift)
        maps = torch.where(finite_images(activations, gradients)[:, None, None], maps, math.nan)
        return maps, labels, eps, certified

    def cluster(self, A: torch.Tensor, floor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1-4 on the rescaled activations: labels ``[B, C]``, eps ``[B]`` (float64,
        scaled like ``A``) and whether the certified stage decided."""
        cfg, n = self.config, self.n
        B, C = A.shape[:2]
        device = A.device
        flat = A.flatten(2)
        important = importance_split(flat, cfg.importance_percentile)
        counts = C - important.to(torch.int64).sum(1)
        labels = torch.full((B, C), -2, dtype=torch.int64, device=device)
        no = torch.zeros((), dtype=torch.bool, device=device)
        if self.ranks is None:
            return labels.masked_fill(~important, -1), torch.full((B,), math.nan, dtype=torch.float64,
                                                                  device=device), no
        pairs = Pairs(n, self.pair_iu, self.pair_ju, self.pair_flat, *self.ranks)
        # Each image's channels below the split, in index order, then important ones: unique
        # keys, so the order is fixed without a stable sort.
        key = important.to(torch.int64) * C + torch.arange(C, device=device)[None, :]
        rest = torch.topk(key, n, dim=1, largest=False, sorted=True).indices
        points = flat.gather(1, rest[:, :, None].expand(B, n, flat.shape[2]))
        q = torch.tensor(cfg.eps_percentile, dtype=torch.float64, device=device)  # (``tracing.cond``)
        if self.distances == "exact":
            eps, adj = exact_decisions(points, counts, q, floor, pairs)
            certified = no
        else:
            eps_c, adj_c, certified = certified_decisions(points, counts, q, floor, pairs)

            def take(points: torch.Tensor, counts: torch.Tensor, floor: torch.Tensor, eps_c: torch.Tensor,
                     adj_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return eps_c.clone(), adj_c.clone()

            def recompute(points: torch.Tensor, counts: torch.Tensor, floor: torch.Tensor, eps_c: torch.Tensor,
                          adj_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return exact_decisions(points, counts, q, floor, pairs, static=False)

            eps, adj = cond(certified, take, recompute, (points, counts, floor, eps_c, adj_c))
        valid = torch.arange(n, device=device)[None, :] < counts[:, None]
        adj = (adj | torch.eye(n, dtype=torch.bool, device=device)[None]) & valid[:, :, None] & valid[:, None, :]
        rest_labels, _ = dbscan_labels(adj, valid, min_samples_for(counts, cfg), self.loop)
        return labels.scatter(1, rest, torch.where(valid, rest_labels, -2)), eps, certified
