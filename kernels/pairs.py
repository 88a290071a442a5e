"""The fused pairwise stage: eps and DBSCAN labels of ``[B, n, d]`` float32 points without the
``[B, n, n]`` distance matrix, every decision made on the exact float64 squared distance.

It computes what ``core.cluster.PairDistances`` with the certified float32 distances
computes on the CPU (docs/algorithm.md steps 3-4): eps, two exact order statistics of the
unordered pair distances, NumPy's lerp, the floor; and scikit-learn's DBSCAN labels.
Nothing of size ``n x n`` is written but the neighbour relation packed into bits, and
nothing waits for the host: a fixed sequence of launches, no data-dependent shape, so the
stage can be captured in a CUDA graph. The enclosures the decisions rest on are in
``pair_bounds``, the selection in ``pair_select``, the bits and labels in ``pair_labels``.

The passes
----------
1. ``prep_kernel``: ``n64`` (sequential float64 squared norms) and the slack ``s_i``;
   ``point_groups`` (torch, sort-based, fixed shapes) marks exact duplicates.
2. ``sample_kernel`` (one program per image): the two ranks and the lerp fraction exactly as
   ``core.formulas.doubled_percentile_ranks``; the exact values of ``sample_size`` hashed pairs,
   sorted, bracket the ranks (as ``csrc/order_cpu.h``'s ``SampleBracket``): the first grid.
3. ``scan_kernel`` x ``max_scan_passes`` (many programs per image, each a strided set of
   upper-triangle tiles), each followed by ``update_kernel`` (one program per image). Per
   rank the state is a key interval ``[L, H)`` of float64 bit patterns (monotone for
   ``D >= 0``) known to hold the wanted order statistic, with ``below = #{D < L}`` exact.
   - HIST: bins ``{L}``, ``(L, G0)``, ``NB`` bins of ``2^sh`` keys from ``G0``, the rest.
     A pair whose ``[lo, hi]`` keys fall in one bin is counted there; any other pair is
     recomputed exactly (``_exact_tile``, in tile, rows in parallel) and counted by its
     exact key. Every count is therefore a count of exact keys, and the bin holding rank
     ``r - below`` is the new interval, exactly. Per-program register histograms
     (``tl.histogram``), one masked atomic flush per program.
   - COLLECT (when the interval holds at most ``collect_capacity`` exact keys, a number the
     previous HIST pass counted exactly, so the buffer cannot overflow): every pair whose
     enclosure meets ``[L, H)`` is recomputed and the exact keys inside are appended; the
     update sorts them (``tl.sort``) and reads rank ``r - below``.
   - DONE when the interval is one key or the buffer was read. Images with fewer than two
     points start DONE; later launches return at once for DONE images.
   Ties (dead channels, copies) never overflow anything: a tie group larger than the buffer
   is narrowed by HIST passes to a one-key interval. ``max_scan_passes`` is the number of
   HIST passes that reach one key from the whole float64 range, so the launch sequence is
   fixed and always enough.
4. ``finalize_kernel``: eps (correctly rounded sqrt, NumPy's lerp, floor, NaN below two
   points) and the threshold ``T = core.cluster.sq_threshold(eps)`` by the same steps as the
   package's functions, with a correctly rounded sqrt (as ``core.formulas.sqrt_rn``).
5. ``bits_kernel``: the neighbour relation ``D_ij <= T`` (``i != j``) packed into
   ``[B, n, ceil(n / 32)]`` int32, decided from ``[lo, hi]`` and recomputed exactly only
   when ``lo <= T < hi``; each upper tile writes its block and the mirrored block.
6. ``label_kernel`` (one program per image): core points from popcounts (+1 for the point
   itself), components by min-label propagation with pointer jumping until a sweep changes
   nothing, border points to the smallest adjacent component, clusters numbered by a prefix
   count of roots: scikit-learn's labels and numbering (docs/exactness.md).

Every kernel sits beside a plain-PyTorch function it must equal (``*_torch``), and
``eps_and_labels_torch`` is the whole stage in PyTorch on exact distances.
"""
from __future__ import annotations

import math

import torch
import triton

from ..core.cluster import torch_dbscan
from ..core.cluster.distances import exact_sq_distances
from ..core.formulas import doubled_percentile_ranks
from ..core.selection import pair_ranks_torch
from ._launch import check_size, launcher
from .pair_bounds import (
    EXACT,
    enclosure_kernel,
    point_groups,
    prep_kernel,
    slack_coefficient,
    slack_floor,
)
from .pair_labels import bits_kernel, label_kernel
from .pair_select import (
    STATE,
    finalize_kernel,
    finalize_torch,
    max_scan_passes,
    sample_kernel,
    scan_kernel,
    update_kernel,
)

TORCH_EQUIVALENT = "cfcam_fast.kernels.pairs.eps_and_labels_torch"


def upper_tiles(n: int, block: int, device) -> torch.Tensor:
    """``[T, 2]`` int32 block coordinates ``(I, J)``, ``I <= J``, of the upper triangle."""
    nb = max(1, -(-n // block))
    return torch.triu_indices(nb, nb, device=device).t().contiguous().to(torch.int32)


class FusedPairs:
    """The buffers and launches of one ``fused_eps_and_labels`` call, one step per method
    (``run`` does them all), so that tests can compare each kernel with its PyTorch twin.
    Every step only enqueues work. ``first_grid="full"`` starts the selection from a grid
    over all keys instead of the sample (the worst case ``max_scan_passes`` is sized for)."""

    def __init__(self, points: torch.Tensor, counts: torch.Tensor, q: float, floor, min_samples: torch.Tensor, *,
                 block: int = 64, hist_bins: int = 1024, collect_capacity: int = 2048, sample_size: int = 2048,
                 programs_per_image: int | None = None, num_warps: int = 16, first_grid: str = "sample"):
        if points.dim() != 3 or points.dtype != torch.float32:
            raise ValueError(f"points must be float32 [B, n, d], got {points.dtype} {tuple(points.shape)}")
        if block % 32 or block < 32:
            raise ValueError(f"block must be a multiple of 32, got {block}")
        for name, v in (("hist_bins", hist_bins), ("collect_capacity", collect_capacity),
                        ("sample_size", sample_size)):
            if v & (v - 1) or v < 16:
                raise ValueError(f"{name} must be a power of two >= 16, got {v}")
        if first_grid not in ("sample", "full"):
            raise ValueError(f"first_grid must be 'sample' or 'full', got {first_grid!r}")
        B, n, d = points.shape
        if n * n >= 2 ** 31:
            raise ValueError(f"at most 46340 points per image, got {n}")
        check_size("fused_eps_and_labels", points)
        dev = points.device
        self.B, self.n, self.d, self.device = B, n, d, dev
        self.q = q
        self.block, self.hist_bins, self.capacity, self.sample_size = block, hist_bins, collect_capacity, sample_size
        self.num_warps, self.first_grid = num_warps, first_grid
        self.X = points.contiguous()
        self.counts = counts.to(device=dev, dtype=torch.int64).clamp(0, n).contiguous()
        # (a number is filled on the device: torch.as_tensor would copy it from pageable host
        # memory, which a CUDA graph capture refuses)
        self.floor = (floor.to(device=dev, dtype=torch.float64).expand(B).contiguous()
                      if isinstance(floor, torch.Tensor) else torch.full((B,), floor, dtype=torch.float64, device=dev))
        self.min_samples = min_samples.to(device=dev, dtype=torch.int64).expand(B).contiguous()
        self.tiles = upper_tiles(n, block, dev)
        self.T = self.tiles.shape[0]
        self.P = programs_per_image or max(1, min(self.T, 1024 // max(B, 1)))
        self.BD = max(16, min(64, triton.next_power_of_2(max(d, 1))))
        self.W = (n + 31) // 32
        self.passes = max_scan_passes(hist_bins)
        f64, i64, i32 = torch.float64, torch.int64, torch.int32
        self.n64 = torch.empty((B, n), dtype=f64, device=dev)
        self.slack = torch.empty((B, n), dtype=f64, device=dev)
        self.gid = None
        self.state = torch.empty((B, 2, STATE), dtype=i64, device=dev)
        self.share = torch.empty((B,), dtype=i32, device=dev)
        self.tfrac = torch.empty((B,), dtype=f64, device=dev)
        self.hist = torch.zeros((B, 2, hist_bins), dtype=i32, device=dev)
        self.cand = torch.empty((B, 2, collect_capacity), dtype=i64, device=dev)
        self.ccount = torch.zeros((B, 2), dtype=i32, device=dev)
        self.values = torch.zeros((B, 2), dtype=f64, device=dev)
        self.eps = torch.full((B,), math.nan, dtype=f64, device=dev)
        self.thr = torch.empty((B,), dtype=f64, device=dev)
        self.bits_ = torch.zeros((B, n, self.W), dtype=i32, device=dev)
        self.lab = torch.empty((B, n), dtype=i32, device=dev)
        self.rank = torch.empty((B, n), dtype=i32, device=dev)
        self.labels = torch.full((B, n), -1, dtype=i64, device=dev)
        self.launches = 0

    def _kernel(self, kernel):
        self.launches += 1
        return launcher(kernel, self.device, getattr(kernel, "__name__", "a cfcam_fast.kernels.pairs kernel"),
                        TORCH_EQUIVALENT)

    def prep(self) -> None:
        """``n64``, ``slack`` (``prep_kernel``) and the duplicate groups (``point_groups``)."""
        PB = 128
        self._kernel(prep_kernel)[(triton.cdiv(self.n, PB), self.B)](
            self.X, self.n64, self.slack, self.n, D=self.d, COEF=slack_coefficient(self.d),
            FLOOR=slack_floor(self.d), BLOCK=PB, **EXACT)
        self.gid = point_groups(self.X, self.counts)

    def sample(self) -> None:
        self._kernel(sample_kernel)[(self.B,)](
            self.X, self.counts, self.state, self.share, self.tfrac, self.n, D=self.d, QF=self.q / 100.0,
            S=self.sample_size,
            NB=self.hist_bins - 4, USE_SAMPLE=self.first_grid == "sample", num_warps=self.num_warps, **EXACT)

    def scan(self) -> None:
        self._kernel(scan_kernel)[(self.P, self.B)](
            self.X, self.n64, self.slack, self.gid, self.counts, self.tiles, self.state, self.share, self.hist,
            self.cand, self.ccount, self.n, self.T, self.P, D=self.d, BI=self.block, BD=self.BD, HB=self.hist_bins,
            K=self.capacity, num_warps=self.num_warps, **EXACT)

    def update(self) -> None:
        self._kernel(update_kernel)[(self.B,)](
            self.state, self.share, self.hist, self.cand, self.ccount, self.values, HB=self.hist_bins,
            K=self.capacity, num_warps=self.num_warps)

    def finalize(self) -> None:
        FB = 128
        self._kernel(finalize_kernel)[(triton.cdiv(self.B, FB),)](
            self.values, self.tfrac, self.counts, self.floor, self.eps, self.thr, self.B, BLOCK=FB, **EXACT)

    def bits(self) -> None:
        self._kernel(bits_kernel)[(self.P, self.B)](
            self.X, self.n64, self.slack, self.gid, self.counts, self.tiles, self.thr, self.bits_, self.n,
            self.T, self.P, self.W, D=self.d, BI=self.block, BD=self.BD, num_warps=self.num_warps, **EXACT)

    def label(self) -> None:
        self._kernel(label_kernel)[(self.B,)](
            self.bits_, self.counts, self.min_samples, self.lab, self.rank, self.labels, self.n, self.W, BR=64,
            num_warps=4)

    def run(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.B == 0 or self.n == 0:
            return self.eps, self.labels
        self.prep()
        self.sample()
        for _ in range(self.passes):
            self.scan()
            self.update()
        self.finalize()
        self.bits()
        self.label()
        return self.eps, self.labels


def fused_eps_and_labels(points: torch.Tensor, counts: torch.Tensor, q: float, floor, min_samples: torch.Tensor,
                         **options) -> tuple[torch.Tensor, torch.Tensor]:
    """eps ``[B]`` float64 and DBSCAN labels ``[B, n]`` int64 of ``points`` ``[B, n, d]``
    float32: what ``PairDistances(points, plan)`` with certified float32 (or the exact
    float64) distances gives as ``.eps(counts, q, floor)`` and
    ``.labels(counts, sq_threshold(eps.nan_to_num(0)), min_samples)``, bit for bit.

    ``counts`` int64 ``[B]``, ``floor`` float64 ``[B]`` (or a number), ``min_samples`` int64
    ``[B]``, on ``points``' device. Enqueue-only: ``5 + 2 max_scan_passes(hist_bins)`` Triton
    launches and a few fixed-shape PyTorch ops, no host synchronisation. ``options``: the
    tuning knobs of ``FusedPairs`` (``block``, ``hist_bins``, ``collect_capacity``,
    ``sample_size``, ``programs_per_image``, ``num_warps``)."""
    return FusedPairs(points, counts, q, floor, min_samples, **options).run()


def fused_labels(points: torch.Tensor, counts: torch.Tensor, threshold: torch.Tensor, min_samples: torch.Tensor,
                 **options) -> torch.Tensor:
    """DBSCAN labels ``[B, n]`` int64 of ``points`` ``[B, n, d]`` float32 with given squared
    thresholds: neighbours iff the exact squared distance is at most ``threshold[b]``
    (float64 ``[B]``); the prep, bits and label steps of the stage, no selection."""
    stage = FusedPairs(points, counts, 25.0, 0.0, min_samples, **options)
    if stage.B == 0 or stage.n == 0:
        return stage.labels
    stage.prep()
    stage.thr.copy_(threshold.to(device=stage.device, dtype=torch.float64).expand(stage.B))
    stage.bits()
    stage.label()
    return stage.labels


def enclosures(points: torch.Tensor, counts: torch.Tensor, block: int = 32):
    """``(lo, hi)`` of every valid pair from ``enclosure_kernel`` (NaN elsewhere)."""
    stage = FusedPairs(points, counts, 25.0, 0.0, torch.ones_like(counts), block=block)
    stage.prep()
    B, n = stage.B, stage.n
    lo = torch.full((B, n, n), math.nan, dtype=torch.float64, device=points.device)
    hi = lo.clone()
    nb = triton.cdiv(n, block)
    launcher(enclosure_kernel, points.device, "enclosure_kernel", "enclosure_bound_torch")[(nb, nb, B)](
        stage.X, stage.n64, stage.slack, stage.gid, stage.counts, lo, hi, n, D=stage.d, BI=block, BD=stage.BD, **EXACT)
    return lo, hi


def eps_and_labels_torch(points: torch.Tensor, counts: torch.Tensor, q: float, floor: torch.Tensor,
                         min_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole stage in PyTorch on exact distances (``core.cluster.distances.exact_sq_distances``): the function
    ``fused_eps_and_labels`` must equal (order statistics by ``selection.pair_ranks_torch``,
    eps and threshold by ``finalize_torch``, labels by the ``torch`` DBSCAN backend)."""
    exact = exact_sq_distances(points)
    counts = counts.to(torch.int64)
    floor = torch.as_tensor(floor, dtype=torch.float64).expand(points.shape[0])
    ranks, t = doubled_percentile_ranks(counts * (counts - 1) // 2, q)
    safe = counts >= 2
    if points.shape[1] >= 2:
        values = pair_ranks_torch(exact, torch.where(safe, counts, 2), ranks * safe[:, None])
    else:  # no pair anywhere (pair_ranks_torch needs one)
        values = torch.zeros(points.shape[0], 2, dtype=torch.float64, device=points.device)
    eps, thr = finalize_torch(values, t, counts, floor)
    if points.shape[1] == 0:  # (the torch DBSCAN backend needs a point)
        return eps, torch.empty(points.shape[:2], dtype=torch.int64, device=points.device)
    return eps, torch_dbscan.dbscan_labels(exact, counts, thr, min_samples.to(torch.int64))
