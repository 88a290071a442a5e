"""The ``torch`` backend: docs/algorithm.md for a whole batch on the tensors' own device.

Stages: ``cluster_channels`` (steps 1-4), ``channel_weights`` (step 5), ``combine`` (steps
6-7); a plan with core "triton" runs the fused kernels of ``cfcam_fast.kernels`` for steps
5-7 instead. The pairwise stage runs in chunks of images sized by ``memory_budget``, as
the plan's distances, eps selector and DBSCAN say.
"""
from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass

import torch

from .. import cluster
from ..config import CFCAMConfig, CFCAMResult
from ..filters import filter_maps, gaussian_mean_map, official_kernel, official_mean_map
from ..formulas import lerp, linear_percentile_position, min_samples_for
from ..output import weighted_map
from ..plan import Plan

# Bytes the pairwise stage holds per (point, point) entry, at most: float64 distances and
# their temporaries, the bool neighbour masks and the int32 labels of the propagation (the
# certified CPU stage needs less: float32 distances and a byte per pair per thread).
PAIR_BYTES = 40
CPU_BUDGET = 1 << 30  # bytes of the pairwise stage on the CPU when the config leaves it to us


def memory_budget(config: CFCAMConfig, device: torch.device) -> int:
    """Bytes the pairwise stage may hold at once: ``config.memory_budget_bytes`` when set;
    otherwise ``CPU_BUDGET`` on the CPU, and on CUDA a quarter of what the caching allocator
    could still hand out (the device's free memory plus its own cached, unused blocks), at
    least ``CPU_BUDGET``, so that a large batch runs in one chunk (docs/backends.md)."""
    if config.memory_budget_bytes is not None:
        return config.memory_budget_bytes
    if device.type != "cuda":
        return CPU_BUDGET
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return max(CPU_BUDGET, (free + cached) // 4)

# Per image, the activations, tiny gradients and (for the scale-invariant weightings) the
# channel weights are multiplied by a power of two that brings their largest magnitude into
# [2^(SCALE_EXPONENT - 1), 2^SCALE_EXPONENT): for -21 the factor is a float32 (subnormal
# included) for every float32 peak, so one exact multiplication does it. Gradients are only
# scaled up: below 2^-20 the official filter's range term exp(-d^2 / 0.02) is 1 in float32
# whatever the scale, so every stage is linear in them there.
SCALE_EXPONENT = -21


def explain(activations: torch.Tensor, gradients: torch.Tensor, output_size, config: CFCAMConfig, plan: Plan,
            return_filtered: bool = False, *, fixed: FixedShapes | None = None) -> CFCAMResult:
    """CF-CAM for ``[B, C, H, W]`` tensors as ``plan`` says (core "torch", or "triton" for
    the fused kernels of steps 5-7); the result records ``plan``.

    ``fixed``: run with shapes fixed in advance, as one chunk, in a buffer given (the
    real-time path and the replayed graphs; see ``FixedShapes``). On CUDA every call takes
    its shapes from static bounds (``max_remaining``; ``C`` for the cluster numbers), so it
    enqueues its work without waiting for the device.

    The stages compute in float32 (inputs rounded to it first, as the reference does) on
    exact per-image power-of-two rescalings (``SCALE_EXPONENT``), so no product underflows
    or overflows, and the results are unchanged: eps is scale-equivariant once its floor is
    scaled alike (and is scaled back), the map is positively homogeneous in the activations
    and in ``alpha``, then normalised, and the returned weights are scaled back."""
    static = fixed is not None or activations.device.type == "cuda"
    # With static shapes, C bounds the cluster numbers (no host synchronisation to find them).
    slots = activations.shape[1] if static else None
    if plan.core == "triton":
        kernels = importlib.import_module("cfcam_fast.kernels")  # imports Triton: only when asked for
        weights_fn, combine_fn = functools.partial(kernels.channel_weights, slots=slots), kernels.combine
    elif plan.core == "torch":
        weights_fn = functools.partial(channel_weights, slots=slots)
        combine_fn = combine
    else:
        raise ValueError(f"the torch backend runs plans with core:torch or core:triton, got {plan}")
    A, G = activations.float(), gradients.float()
    a_shift = SCALE_EXPONENT - peak_exponent(A)
    g_shift = (SCALE_EXPONENT - peak_exponent(G)).clamp(min=0)
    A, G = times_pow2(A, a_shift), times_pow2(G, g_shift)
    labels, eps = cluster_channels(A, config, plan, fixed, floor=config.eps_floor * pow2(a_shift), static=static)
    w_scaled = weights_fn(G, labels, config)
    w = _divide(w_scaled, pow2(g_shift))
    if config.weighting == "softmax":  # not scale-invariant: the weights as they are
        maps, alpha = combine_fn(A, w, labels, config.weighting, output_size)
    else:
        w_shift = SCALE_EXPONENT - peak_exponent(w_scaled)
        maps, alpha = combine_fn(A, times_pow2(w_scaled, w_shift), labels, config.weighting, output_size)
        if config.weighting == "linear":  # alpha is the weights
            alpha = _divide(alpha, pow2(g_shift + w_shift))
    filtered = None
    if return_filtered:
        filtered = [_divide(f, pow2(g_shift[b])) for b, f in enumerate(filtered_maps(G, labels, config))]
    return CFCAMResult(maps=maps, labels=labels, channel_weights=w, weights=alpha,
                       eps=eps / pow2(a_shift), filtered=filtered, plan=plan)


def pow2(e: torch.Tensor) -> torch.Tensor:
    """``2.0 ** e`` in float64, exactly, for an integer tensor ``e`` (clamped to float64's
    normal exponents), built from its bits: no rounding and no host synchronisation."""
    return ((e.to(torch.int64).clamp(-1022, 1023) + 1023) << 52).view(torch.float64)


def peak_exponent(x: torch.Tensor) -> torch.Tensor:
    """Per image of ``x`` ``[B, ...]``, the int64 ``e`` with its largest magnitude in
    ``[2^(e-1), 2^e)`` (0 for an image of zeros)."""
    flat = x.flatten(1)
    peak = torch.maximum(flat.amax(1), -flat.amin(1))  # no |x| temporary
    return torch.frexp(peak.to(torch.float64)).exponent.to(torch.int64)


def times_pow2(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """float32 ``x[b] * 2^e[b]`` for ``2^e`` a float32 (``-149 <= e <= 127``): exact
    wherever the result is a normal float32."""
    return x * pow2(e).float().view((-1,) + (1,) * (x.dim() - 1))


def _divide(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x / scale`` per image (float64 ``scale`` ``[B]`` or a scalar), rounded once to float32."""
    return (x.double() / scale.view((-1,) + (1,) * (x.dim() - 1))).float()


def importance_split(flat: torch.Tensor, q: float) -> torch.Tensor:
    """Step 2: ``[B, C]`` bool, channels whose L2 norm is at least the q-th percentile."""
    norms = torch.linalg.vector_norm(flat, dim=2, dtype=torch.float64)
    C = norms.shape[1]
    k, t = linear_percentile_position(C, q)
    ordered = norms.sort(1).values
    tau = lerp(ordered[:, k], ordered[:, min(k + 1, C - 1)], t)
    return norms >= tau[:, None]


@dataclass(frozen=True)
class FixedShapes:
    """Shapes fixed before the first call, so that a call has no data-dependent shape and
    no host synchronisation: ``n``, the most channels that can fall below the importance
    split (``max_remaining``); ``buffer``, the ``[B, n, n]`` tensor for the pairwise
    distances (dtype ``plan.distance_dtype`` of the call's plan; ``None`` for the fused
    stage, which holds none). The batch runs as one chunk."""

    n: int
    buffer: torch.Tensor | None


def pair_matrix(B: int, n: int, plan: Plan) -> torch.Tensor | None:
    """The ``[B, n, n]`` buffer of a plan's pairwise distances, or ``None`` for the fused
    stage, which holds none."""
    if not plan.holds_distances:
        return None
    return torch.empty((B, n, n), dtype=plan.distance_dtype, device=plan.device)


def max_remaining(C: int, q: float) -> int:
    """The most of ``C`` channels whose norm can lie strictly below the ``q``-th percentile:
    those sorted before position ``floor((C - 1) q / 100) + 1`` (the percentile is at
    least the value at its lower index, so no later channel is below it)."""
    k, _ = linear_percentile_position(C, q)
    return min(C, k + 1)


def cluster_channels(A: torch.Tensor, config: CFCAMConfig, plan: Plan | None = None,
                     fixed: FixedShapes | None = None, floor: torch.Tensor | None = None, *,
                     static: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-4: labels ``[B, C]`` (-2 important, -1 noise, >= 0 cluster) and eps ``[B]``,
    by ``plan`` (default: ``clustering_plan(config.dbscan_backend, A.device)``).
    ``floor``: each image's eps floor, float64 ``[B]`` (default ``config.eps_floor``).
    ``static`` (or ``fixed``): the pairwise stage holds ``max_remaining`` points per image
    instead of the largest count, which would need a host synchronisation to read."""
    if plan is None:
        plan = cluster.clustering_plan(config.dbscan_backend, A.device)
    B, C = A.shape[:2]
    if floor is None:
        floor = torch.full((B,), config.eps_floor, dtype=torch.float64, device=A.device)
    flat = A.flatten(2)
    important = importance_split(flat, config.importance_percentile)
    counts = C - important.sum(1)
    # The remaining channels of each image, in index order, as a valid prefix.
    order = torch.sort(important.to(torch.uint8), dim=1, stable=True).indices
    if fixed is not None:
        n = fixed.n
    else:
        n = max_remaining(C, config.importance_percentile) if static else int(counts.max())
    labels = torch.full((B, C), -2, dtype=torch.int64, device=A.device)
    eps = torch.full((B,), math.nan, dtype=torch.float64, device=A.device)
    if n < 2:
        return labels.masked_fill_(~important, -1), eps
    rest = order[:, :n]
    min_samples = min_samples_for(counts, config)

    def points(b0: int, b1: int) -> torch.Tensor:  # images b0..b1's remaining channels, [b, n, hw]
        return flat[b0:b1].gather(1, rest[b0:b1, :, None].expand(-1, -1, flat.shape[2]))

    if not plan.holds_distances:  # the fused stage: no matrix, so no chunks
        fused = importlib.import_module("cfcam_fast.kernels.pairs")
        eps, rest_labels = fused.fused_eps_and_labels(points(0, B), counts, config.eps_percentile, floor,
                                                      min_samples)
        return _scatter_labels(labels, rest, rest_labels, counts, n), eps
    rest_labels = torch.empty((B, n), dtype=torch.int64, device=A.device)
    step = B if fixed is not None else max(1, memory_budget(config, A.device) // (PAIR_BYTES * n * n))
    for b0 in range(0, B, step):
        b1 = min(B, b0 + step)
        buffer = None if fixed is None or fixed.buffer is None else fixed.buffer[: b1 - b0]
        # eps and the labels are decided on one set of squared distances.
        pairs = cluster.PairDistances(points(b0, b1), plan, buffer)
        eps[b0:b1] = pairs.eps(counts[b0:b1], config.eps_percentile, floor[b0:b1])
        rest_labels[b0:b1] = pairs.labels(counts[b0:b1], cluster.sq_threshold(eps[b0:b1].nan_to_num(0.0)),
                                          min_samples[b0:b1])
    return _scatter_labels(labels, rest, rest_labels, counts, n), eps


def _scatter_labels(labels: torch.Tensor, rest: torch.Tensor, rest_labels: torch.Tensor, counts: torch.Tensor,
                    n: int) -> torch.Tensor:
    """``labels`` ``[B, C]`` with the labels of each image's remaining channels written in.
    Slots past an image's count point at important channels and write -2 back."""
    valid = torch.arange(n, device=labels.device)[None, :] < counts[:, None]
    return labels.scatter_(1, rest, torch.where(valid, rest_labels, -2))


def _cluster_sums(values: torch.Tensor, labels: torch.Tensor, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, sums of ``values`` ``[B, C, ...]`` over each cluster's members and member
    counts, indexed by cluster number: ``[B, slots, ...]`` and ``[B, slots]``, where
    ``slots`` exceeds every cluster number."""
    B, C = labels.shape
    trailing = [1] * (values.dim() - 2)
    slot = labels.clamp(min=0)
    member = (labels >= 0).to(values.dtype)
    weighted = values * member.view(B, C, *trailing)
    index = slot.view(B, C, *trailing).expand_as(values)
    sums = values.new_zeros((B, slots, *values.shape[2:])).scatter_add_(1, index, weighted)
    sizes = values.new_zeros((B, slots)).scatter_add_(1, slot, member)
    return sums, sizes


def channel_weights(G: torch.Tensor, labels: torch.Tensor, config: CFCAMConfig,
                    slots: int | None = None) -> torch.Tensor:
    """Step 5: ``w_c`` ``[B, C]`` float32 (0 for noise), by linearity of the filters.
    ``slots``: a fixed bound on the cluster numbers (``C`` will do) instead of reading the
    largest label from the device (the official filter's only synchronisation)."""
    B, C, H, W = G.shape
    if config.filter == "gaussian":
        m = gaussian_mean_map(H, W, config.sigma, config.truncate, device=G.device)
        per_channel = (G.flatten(2) * m.flatten()).sum(2)
        sums, sizes = _cluster_sums(per_channel, labels, C)
        cluster_w = sums / sizes.clamp(min=1)
    else:
        # The kernels depend on each cluster's mean map: form only the clusters that exist.
        sums, sizes = _cluster_sums(G, labels, slots or max(1, int(labels.amax()) + 1))
        means = sums / sizes.clamp(min=1)[:, :, None, None]
        cluster_w = (means * official_mean_map(official_kernel(means))).sum((2, 3))
    w = torch.where(labels >= 0, cluster_w.gather(1, labels.clamp(min=0)), 0.0)
    return torch.where(labels == -2, G.mean((2, 3)), w)


def filtered_maps(G: torch.Tensor, labels: torch.Tensor, config: CFCAMConfig) -> list[torch.Tensor]:
    """The filtered cluster-mean maps ``f_k``: one ``[K_b, H, W]`` tensor per image."""
    n_clusters = (labels.amax(1) + 1).clamp(min=0).tolist()
    sums, sizes = _cluster_sums(G, labels, max(1, max(n_clusters)))
    out = []
    for b, k in enumerate(n_clusters):
        means = sums[b, :k] / sizes[b, :k, None, None]
        out.append(filter_maps(means, config.filter, config.sigma, config.truncate))
    return out


def combination_weights(w: torch.Tensor, kept: torch.Tensor, weighting: str) -> torch.Tensor:
    """Step 6's ``alpha`` ``[B, C]`` over the kept channels (0 elsewhere)."""
    if weighting == "linear":
        return torch.where(kept, w, 0.0)
    if weighting == "standardized":
        n = kept.sum(1, keepdim=True).clamp(min=1)
        mean = torch.where(kept, w, 0.0).sum(1, keepdim=True) / n
        std = (torch.where(kept, w - mean, 0.0) ** 2).sum(1, keepdim=True).div(n).sqrt()
        w = torch.where(std > 0, (w - mean) / torch.where(std > 0, std, 1.0), 0.0)
    return torch.softmax(w.masked_fill(~kept, -math.inf), dim=1).nan_to_num(0.0)


def combine(A: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, weighting: str,
            output_size) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 6-7: maps ``[B, H_in, W_in]`` in ``[0, 1]`` and ``alpha`` ``[B, C]``."""
    alpha = combination_weights(w, labels != -1, weighting)
    return weighted_map(A, alpha, output_size), alpha
