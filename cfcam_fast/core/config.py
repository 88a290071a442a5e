"""Configuration and result types of CF-CAM (docs/algorithm.md)."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from .checks import is_real_number
from .plan import DBSCANS, Plan

FILTERS = ("gaussian", "official")
WEIGHTINGS = ("softmax", "standardized", "linear")
DBSCAN_BACKENDS = ("auto", *DBSCANS)


@dataclass(frozen=True)
class CFCAMConfig:
    """Parameters of CF-CAM; defaults reproduce the published method (docs/algorithm.md).

    Invalid values raise ``ValueError`` naming the field on construction.
    ``dbscan_backend`` picks the clustering implementation and ``memory_budget_bytes``
    bounds the pairwise-distance stage of the batched backends (images are processed in
    chunks that fit the budget). ``None`` sizes it per call: 1 GiB on the CPU, a quarter of
    what PyTorch can still allocate on a CUDA device (at least 1 GiB).
    """

    importance_percentile: float = 75.0
    eps_percentile: float = 25.0
    eps_floor: float = 1e-5
    min_samples_fraction: float = 0.05
    min_samples_floor: int = 2
    filter: str = "gaussian"
    sigma: float = 1.0
    truncate: float = 4.0
    weighting: str = "softmax"
    dbscan_backend: str = "auto"
    memory_budget_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("importance_percentile", "eps_percentile"):
            value = getattr(self, name)
            if not is_real_number(value) or not 0.0 <= value <= 100.0:
                raise ValueError(f"CFCAMConfig.{name} must be a number in [0, 100], got {value!r}")
        if not is_real_number(self.eps_floor) or not self.eps_floor > 0.0:
            raise ValueError(f"CFCAMConfig.eps_floor must be a number > 0 (DBSCAN needs a positive eps), "
                             f"got {self.eps_floor!r}")
        if not is_real_number(self.min_samples_fraction) or not 0.0 <= self.min_samples_fraction <= 1.0:
            raise ValueError(
                f"CFCAMConfig.min_samples_fraction must be in [0, 1], got {self.min_samples_fraction!r}"
            )
        if not isinstance(self.min_samples_floor, int) or isinstance(self.min_samples_floor, bool) \
                or self.min_samples_floor < 1:
            raise ValueError(
                f"CFCAMConfig.min_samples_floor must be an int >= 1, got {self.min_samples_floor!r}"
            )
        if self.filter not in FILTERS:
            raise ValueError(f"CFCAMConfig.filter must be one of {FILTERS}, got {self.filter!r}")
        if not is_real_number(self.sigma) or not self.sigma > 0.0:
            raise ValueError(f"CFCAMConfig.sigma must be a number > 0, got {self.sigma!r}")
        if not is_real_number(self.truncate) or not self.truncate > 0.0:
            raise ValueError(f"CFCAMConfig.truncate must be a number > 0, got {self.truncate!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"CFCAMConfig.weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.dbscan_backend not in DBSCAN_BACKENDS:
            raise ValueError(
                f"CFCAMConfig.dbscan_backend must be one of {DBSCAN_BACKENDS}, got {self.dbscan_backend!r}"
            )
        budget = self.memory_budget_bytes
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
            raise ValueError(f"CFCAMConfig.memory_budget_bytes must be None (sized per call) or an int >= 1, "
                             f"got {budget!r}")

    def replace(self, **changes: Any) -> CFCAMConfig:
        """A copy with the given fields changed (validated again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        unknown = set(changes) - set(values)
        if unknown:
            raise ValueError(f"CFCAMConfig has no field(s) {sorted(unknown)}")
        values.update(changes)
        return CFCAMConfig(**values)


def as_config(config: CFCAMConfig | None) -> CFCAMConfig:
    """``config``, or the defaults for ``None``; ``ValueError`` for anything else."""
    if config is None:
        return CFCAMConfig()
    if not isinstance(config, CFCAMConfig):
        raise ValueError(f"config must be a CFCAMConfig, got {type(config).__name__}")
    return config


@dataclass
class CFCAMResult:
    """Everything one CF-CAM call computed, batched over images.

    ``labels``: -2 important, -1 noise, >= 0 cluster number (scikit-learn's numbering).
    ``channel_weights``: ``w_c`` of docs/algorithm.md step 5 (0 for noise). ``weights``: ``alpha`` of
    step 6 (0 for noise). ``filtered``: the filtered cluster-mean maps ``f_k``, one
    ``[K_b, h, w]`` tensor per image, only when asked for. ``class_idx`` and ``logits``
    come from a CAM's ``explain``. ``plan``: the implementations that computed it
    (``cfcam_fast.plan.Plan``, e.g. ``str(result.plan)`` = ``"core:torch dbscan:native
    distances:float32-certified eps:native on cpu"``); ``None`` for every method but
    CF-CAM, since none of the others has a backend choice.
    """

    maps: torch.Tensor
    labels: torch.Tensor
    channel_weights: torch.Tensor
    weights: torch.Tensor
    eps: torch.Tensor
    class_idx: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    filtered: list[torch.Tensor] | None = None
    plan: Plan | None = None

    def model_outputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(class_idx, logits)`` of a call on a model; ``ValueError`` for a result computed
        from captured tensors, which has neither."""
        if self.class_idx is None or self.logits is None:
            raise ValueError("this result was computed from captured tensors: it has no classes or logits")
        return self.class_idx, self.logits

    @classmethod
    def without_clusters(cls, maps: torch.Tensor, weights: torch.Tensor) -> CFCAMResult:
        """The result of a method without clusters (Grad-CAM and the comparators): ``labels``
        -2 (every channel kept), ``channel_weights`` and ``weights`` both ``weights``
        ``[B, C]``, ``eps`` NaN, float32 maps and weights."""
        B, C = weights.shape
        return cls(maps=maps.float(), labels=torch.full((B, C), -2, dtype=torch.int64, device=maps.device),
                   channel_weights=weights.float(), weights=weights.float(),
                   eps=torch.full((B,), math.nan, dtype=torch.float64, device=maps.device))
