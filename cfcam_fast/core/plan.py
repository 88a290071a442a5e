"""What a Plan is: which implementation computes each stage of CF-CAM on one device.

A ``Plan`` names the core backend, the DBSCAN backend, how the pairwise squared distances
are computed and which selector finds eps (docs/algorithm.md step 3). Every name a Plan can
hold is a key ``"<stage>:<name>"`` (``core:``, ``dbscan:``, ``distances:``, ``eps:``), and
this module is where those names are defined: the backends and ``core.resolve`` (which
turns ``"auto"`` into a Plan and says what can run here) take them from it. It imports
nothing of the package.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Every name each field of a Plan can hold, in the order ``cf.backend_status()`` lists them.
CORES = ("reference", "torch", "triton")
DBSCANS = ("sklearn", "torch", "native", "cuml", "fused")
# "pdist": SciPy's pdist, as the reference computes them; "float64": one augmented float64
# matrix product; "float32-certified": float32 products whose decisions are made exact in
# float64 by the compiled ops (CPU; core/cluster/certified.py, docs/exactness.md);
# "float32-fused": the same certificate inside the Triton kernels of cfcam_fast.kernels.pairs,
# which never write the distances.
DISTANCES = ("pdist", "float64", "float32-certified", "float32-fused")
# "numpy": np.percentile of the doubled list (the reference); "torch":
# selection.pair_ranks_torch; "native": the compiled selection of csrc/; "fused": the
# histogram selection of cfcam_fast.kernels.pairs.
EPS_SELECTORS = ("numpy", "torch", "native", "fused")
# The key prefix of each field (``"eps"`` for ``eps_selector``) and its names.
STAGES = {"core": CORES, "dbscan": DBSCANS, "distances": DISTANCES, "eps": EPS_SELECTORS}

DeviceLike = torch.device | str


@dataclass(frozen=True)
class Plan:
    """The implementations one CF-CAM call runs, on ``device``.

    ``core``: "reference", "torch" or "triton"; ``dbscan``: "sklearn", "torch", "native",
    "cuml" or "fused"; ``distances``: "pdist", "float64", "float32-certified" or
    "float32-fused"; ``eps_selector``: "numpy", "torch", "native" or "fused". ``str(plan)``
    reads e.g. ``core:torch dbscan:native distances:float32-certified eps:native on cpu``.
    A combination no path runs is a ``ValueError``.
    """

    core: str
    dbscan: str
    distances: str
    eps_selector: str
    device: torch.device

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", torch.device(self.device))
        for field, value, names in (("core", self.core, CORES), ("dbscan", self.dbscan, DBSCANS),
                                    ("distances", self.distances, DISTANCES),
                                    ("eps_selector", self.eps_selector, EPS_SELECTORS)):
            if value not in names:
                raise ValueError(f"Plan.{field} must be one of {names}, got {value!r}")
        if self.core == "reference":
            consistent = (self.dbscan, self.distances, self.eps_selector) == ("sklearn", "pdist", "numpy")
        else:
            consistent = self.distances != "pdist" and self.eps_selector != "numpy"
        if not consistent:
            raise ValueError(f"{self}: the reference core runs dbscan:sklearn distances:pdist eps:numpy, "
                             "and no other core runs distances:pdist or eps:numpy")
        if self.distances == "float32-certified" and (
                self.dbscan, self.eps_selector, self.device.type) != ("native", "native", "cpu"):
            raise ValueError(f"{self}: distances:float32-certified needs dbscan:native, eps:native and the CPU")
        fused = (self.dbscan == "fused", self.distances == "float32-fused", self.eps_selector == "fused")
        if any(fused) and not all(fused):
            raise ValueError(f"{self}: the fused pairwise stage is dbscan:fused distances:float32-fused eps:fused, "
                             "all three or none")

    @property
    def keys(self) -> tuple[str, str, str, str]:
        """The Plan's four ``cf.backend_status()`` keys: core, dbscan, distances, eps."""
        return (f"core:{self.core}", f"dbscan:{self.dbscan}", f"distances:{self.distances}",
                f"eps:{self.eps_selector}")

    @property
    def distance_dtype(self) -> torch.dtype:
        """The dtype the pairwise squared distances are held in (float32 for the fused stage,
        which holds none)."""
        return torch.float32 if self.distances in ("float32-certified", "float32-fused") else torch.float64

    @property
    def holds_distances(self) -> bool:
        """Whether the pairwise stage writes the ``[B, n, n]`` distances (all but the fused one)."""
        return self.distances != "float32-fused"

    def __str__(self) -> str:
        return f"{' '.join(self.keys)} on {self.device}"
