"""ROAD: RemOve And Debias (Rong et al., ICML 2022), batched on the images' device.

Pixels are removed by the map's ranking and filled in by noisy linear imputation, and the
model's score on the imputed image is compared with its score on the image. The scores
follow the ``grad-cam`` package's ``ROADMostRelevantFirst``, ``ROADLeastRelevantFirst``
and ``ROADCombined`` (their averages over percentiles); the imputation solves the same
linear system as its ``NoisyLinearImputer``, for a whole batch at once (see ``impute``).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..cams.model_state import eval_mode
from ..cams.targets import Targets, class_indices
from ..core.checks import positive_int
from .inputs import check_classes, check_images_maps, check_seed

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
ORDERS = ("morf", "lerf", "combined")
SCORES = ("probability", "logit")
SOLVER_TOLERANCE = 1e-6  # stop when ||residual|| <= SOLVER_TOLERANCE * ||right-hand side||
MAX_ITERATIONS_PER_SIDE = 20  # at most 20 * max(H, W) iterations


class Road(NamedTuple):
    """``road``'s result: ``scores`` ``[B]`` (the mean over percentiles), ``per_percentile``
    ``[B, P]`` and the ``percentiles`` ``[P]`` they belong to."""

    scores: torch.Tensor
    per_percentile: torch.Tensor
    percentiles: torch.Tensor


def _stencil_sum(x: torch.Tensor, padded: torch.Tensor | None = None, rows: torch.Tensor | None = None,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_n w_n x[p + n]`` over the eight neighbours of every pixel of ``[N, H, W]``
    planes, neighbours outside the image counting as zero.

    The weights are grad-cam's (and the ROAD authors') ``neighbors_weights``: 1/6 for the
    four edge neighbours, 1/12 for the four corners. That stencil is
    ``(outer([1, 2, 1], [1, 2, 1]) - 4 * centre) / 12``, applied as two 3-tap passes.
    ``padded`` (``[N, H + 2, W + 2]``, zero border), ``rows`` (``[N, H, W + 2]``) and
    ``out`` are optional work buffers, so that the solver's loop allocates nothing.
    """
    N, H, W = x.shape
    if padded is None or rows is None or out is None:
        padded = x.new_zeros(N, H + 2, W + 2)
        rows = x.new_empty(N, H, W + 2)
        out = torch.empty_like(x)
    padded[:, 1:-1, 1:-1].copy_(x)
    torch.add(padded[:, :-2], padded[:, 2:], out=rows).add_(padded[:, 1:-1], alpha=2)
    torch.add(rows[..., :-2], rows[..., 2:], out=out).add_(rows[..., 1:-1], alpha=2)
    return out.sub_(x, alpha=4).div_(12)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-plane dot products ``[N]`` of ``[N, H, W]`` tensors, without a product tensor."""
    return torch.bmm(a.flatten(1)[:, None], b.flatten(1)[:, :, None])[:, 0, 0]


def _conjugate_gradients(values: torch.Tensor, known: torch.Tensor, tolerance: float,
                         max_iterations: int) -> tuple[torch.Tensor, float]:
    """Solve the imputation system of float64 planes ``[N, H, W]`` (``known`` 1.0 where a
    pixel is kept) from zero; returns the removed pixels' values (zero elsewhere) and the
    worst relative residual of a plane left unconverged (0.0 when all converged).

    A plane that converges is written out and dropped from the iteration, so the others
    go on without its cost and its result does not depend on them. The loop works in
    place (large temporaries would be page-faulted in afresh at every step on the CPU)."""
    N, H, W = values.shape
    diagonal = _stencil_sum(torch.ones(1, H, W, dtype=values.dtype, device=values.device))
    unknown = 1.0 - known
    rhs = unknown * _stencil_sum(known * values)
    solution = torch.zeros_like(rhs)
    rhs_norm = torch.linalg.vector_norm(rhs.flatten(1), dim=1)
    stop = tolerance * rhs_norm
    rows = torch.nonzero(rhs_norm > stop)[:, 0]  # planes still iterating
    unknown, stop, r = unknown[rows], stop[rows], rhs[rows]
    x = torch.zeros_like(r)
    p = r / diagonal
    rz = _dot(r, p)
    z, ap, work = torch.empty_like(r), torch.empty_like(r), None
    for _ in range(max_iterations):
        if rows.numel() == 0:
            return solution, 0.0
        if work is None or work[0].shape[0] != rows.numel():
            work = (r.new_zeros(rows.numel(), H + 2, W + 2), r.new_empty(rows.numel(), H, W + 2),
                    torch.empty_like(r), torch.empty_like(r))
        padded, row_sums, neighbours, masked = work
        _stencil_sum(torch.mul(unknown, p, out=masked), padded, row_sums, neighbours)
        torch.mul(diagonal, p, out=ap).sub_(neighbours).mul_(unknown)
        alpha = (rz / _dot(p, ap))[:, None, None]
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        going = torch.linalg.vector_norm(r.flatten(1), dim=1) > stop
        if not bool(going.all()):
            solution[rows[~going]] = x[~going]
            rows, unknown, stop, x, r, p, rz, z, ap = (t[going] for t in (rows, unknown, stop, x, r, p, rz, z, ap))
        torch.div(r, diagonal, out=z)
        rz_next = _dot(r, z)
        p.mul_((rz_next / rz)[:, None, None]).add_(z)
        rz = rz_next
    if rows.numel() == 0:
        return solution, 0.0
    solution[rows] = x
    residual = torch.linalg.vector_norm(r.flatten(1), dim=1) / rhs_norm[rows]
    return solution, float(residual.max())


def impute(images: torch.Tensor, keep: torch.Tensor, *, tolerance: float = SOLVER_TOLERANCE,
           max_iterations: int | None = None) -> torch.Tensor:
    """Linear imputation of the pixels where ``keep`` ``[B, H, W]`` is False, per channel.

    Every removed pixel becomes the weighted mean of its neighbours inside the image
    (edges 1/6, corners 1/12, renormalised by the weights inside the image), kept
    neighbours with their values: the sparse system of ``grad-cam``'s
    ``NoisyLinearImputer``. It is symmetric positive definite on the removed pixels of an
    image that keeps at least one pixel, and is solved for all images x channels at once
    by conjugate gradients with the Jacobi preconditioner; the stencil is applied as a
    convolution (two 3-tap passes on the whole batch), starting from zero.

    Stopping rule: a plane stops when its residual norm is at most ``tolerance`` times its
    right-hand side's norm (so its error is at most ``tolerance * ||b|| / lambda_min(A)``)
    and leaves the batch, so its result does not depend on the other planes. After
    ``max_iterations`` (default ``20 * max(H, W)``) the solver warns with the worst
    residual. An image that keeps no pixel has nothing to interpolate from and is filled
    with zeros, as grad-cam's solver returns. Computed in float64; returns the images' dtype.
    """
    B, C, H, W = images.shape
    if keep.shape != (B, H, W) or keep.dtype != torch.bool:
        raise ValueError(f"keep must be a bool [B, H, W] tensor of shape {(B, H, W)}, got {keep.dtype} "
                         f"{tuple(keep.shape)}")
    if max_iterations is None:
        max_iterations = MAX_ITERATIONS_PER_SIDE * max(H, W)
    values = images.detach().double().reshape(B * C, H, W)
    known = keep.repeat_interleave(C, dim=0).double()
    x, worst = _conjugate_gradients(values, known, tolerance, max_iterations)
    if worst > 0:
        warnings.warn(f"ROAD imputation stopped after {max_iterations} conjugate-gradient iterations with a "
                      f"relative residual of {worst:.2e} (tolerance {tolerance:.0e})", RuntimeWarning, stacklevel=2)
    return (known * values + x).reshape(B, C, H, W).to(images.dtype)


def percentile_thresholds(maps: torch.Tensor, percentiles: Sequence[float]) -> torch.Tensor:
    """NumPy's ``np.percentile(map, p)`` (linear method) of each ``[B, H, W]`` map, ``[B, P]``,
    with NumPy's arithmetic: the interpolation weight in float64, the lerp in the maps' dtype."""
    values = maps.flatten(1).sort(dim=1).values
    n = values.shape[1]
    columns = []
    for p in percentiles:
        position = (n - 1) * (p / 100)
        low = min(math.floor(position), n - 1)
        high = min(low + 1, n - 1)
        t = position - low
        a, b = values[:, low], values[:, high]
        diff = b - a
        if t < 0.5:
            columns.append(a + diff * torch.tensor(t, dtype=maps.dtype, device=maps.device))
        else:
            columns.append(b - diff * torch.tensor(1 - t, dtype=maps.dtype, device=maps.device))
    return torch.stack(columns, dim=1)


def _check_percentiles(percentiles) -> tuple:
    try:
        percentiles = tuple(percentiles)
    except TypeError:
        raise ValueError(f"percentiles must be a sequence of numbers in (0, 100), got {percentiles!r}") from None
    if not percentiles or any(isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 100
                              for p in percentiles):
        raise ValueError(f"percentiles must be a non-empty sequence of numbers in (0, 100), got {percentiles!r}")
    return percentiles


def _scores(logits: torch.Tensor, classes: torch.Tensor, score: str) -> torch.Tensor:
    logits = logits.flatten(1).float()
    check_classes(classes, logits.shape[1])
    values = torch.softmax(logits, dim=1) if score == "probability" else logits
    return values.gather(1, classes[:, None])[:, 0]


def road(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: Targets = None, *,
         percentiles: Sequence[float] = PERCENTILES, order: str = "combined", noise: float = 0.01,
         seed: int = 0, score: str = "probability", batch_size: int = 64) -> Road:
    """ROAD score change per image, as ``grad-cam``'s ROAD classes compute it.

    For each percentile ``p`` the map's ``p``-th percentile ``t`` (NumPy's linear method)
    splits the pixels. ``order="morf"`` (most relevant first) removes the pixels with
    ``map >= t`` and ``"lerf"`` (least relevant first) those with ``1 - map >=`` the
    ``p``-th percentile of ``1 - map``: about ``100 - p`` percent of the pixels either way.
    The removed pixels are imputed (``impute``) and Gaussian noise of standard deviation
    ``noise`` is added to them. The value at ``p`` is ``score(imputed) - score(image)``
    for the target class; ``scores`` is its mean over the percentiles. For MoRF a lower
    (more negative) value is more faithful, for LeRF a higher one; ``"combined"`` is
    ``(LeRF - MoRF) / 2`` per percentile (grad-cam's ``ROADCombined``), higher is better.

    ``score="probability"`` (softmax) is grad-cam with ``ClassifierOutputSoftmaxTarget``;
    ``"logit"`` is grad-cam with ``ClassifierOutputTarget``. ``targets`` as in the other
    metrics (``None``: the arg-max class on the images). The noise comes from a
    ``torch.Generator`` on the images' device seeded with ``seed``, drawn image by image
    in a fixed order, so results do not depend on ``batch_size``; its draws differ from
    grad-cam's (``torch.randn_like`` on the global generator), so only ``noise=0`` can
    reproduce grad-cam's values. ``batch_size`` is the number of imputed images solved
    and scored per model call.
    """
    positive_int("batch_size", batch_size)
    check_images_maps(images, maps)
    if not maps.is_floating_point():
        raise ValueError(f"maps must be floating point, got {maps.dtype}")
    percentiles = _check_percentiles(percentiles)
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise must be a number >= 0 (a standard deviation), got {noise!r}")
    check_seed(seed)
    B, C, H, W = images.shape
    P = len(percentiles)
    device = images.device
    with eval_mode(model), torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in images.split(batch_size)])
        classes = class_indices(targets, B, device)
        classes = logits.flatten(1).argmax(1) if classes is None else classes
        clean = _scores(logits, classes, score)
        # keep[o, p, b]: the pixels of image b left as they are at percentile p, order o.
        orders = ("morf", "lerf") if order == "combined" else (order,)
        kept = []
        for o in orders:
            ranked = maps if o == "morf" else 1 - maps
            thresholds = percentile_thresholds(ranked, percentiles)  # [B, P]
            kept.append(ranked[:, None] < thresholds[:, :, None, None])  # [B, P, H, W]
        keep = torch.stack(kept).transpose(1, 2).reshape(-1, H, W)  # [O * P * B, H, W]
        jobs = torch.arange(keep.shape[0], device=device)
        gen = torch.Generator(device=device).manual_seed(seed)
        after = []
        for chunk in jobs.split(batch_size):
            b = chunk % B
            x = impute(images[b], keep[chunk])
            if noise > 0:
                draws = torch.stack([torch.randn((C, H, W), generator=gen, device=device, dtype=images.dtype)
                                     for _ in range(chunk.shape[0])])
                x = torch.where(keep[chunk][:, None], x, x + noise * draws)
            after.append(_scores(model(x), classes[b], score))
    change = (torch.cat(after) - clean.repeat(len(orders) * P)).reshape(len(orders), P, B).transpose(1, 2)
    per_percentile = (change[1] - change[0]) / 2 if order == "combined" else change[0]
    return Road(per_percentile.mean(1), per_percentile, torch.tensor(percentiles, device=device))
