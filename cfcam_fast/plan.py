"""Which implementation computes each stage of CF-CAM, decided once per call.

A ``Plan`` names, for one device, the core backend, the DBSCAN backend, how the pairwise
squared distances are computed and which selector finds eps (docs/algorithm.md step 3).
``resolve_plan`` turns the user's choices (``"auto"`` included) into a Plan at the start
of a call; the stages then follow the Plan and check nothing global again. Every name a
Plan can hold is a key ``"<stage>:<name>"`` (``core:``, ``dbscan:``, ``distances:``,
``eps:``); ``str(plan)`` lists its keys and ``status()`` (``cf.backend_status()``) maps
every key to ``"available"`` or the reason it cannot run here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from . import backends, cluster
from .cluster import certified

if TYPE_CHECKING:
    from .config import CFCAMConfig

# Every name each field of a Plan can hold, in the order ``status()`` lists them.
CORES = backends.CORE_BACKENDS
DBSCANS = cluster.BACKENDS
# "pdist": SciPy's pdist, as the reference computes them; "float64": one augmented float64
# matrix product; "float32-certified": float32 products whose decisions are made exact in
# float64 by the compiled ops (CPU; cluster/certified.py, docs/exactness.md).
DISTANCES = ("pdist", "float64", "float32-certified")
# "numpy": np.percentile of the doubled list (the reference); "torch":
# selection.pair_ranks_torch; "native": the compiled selection of csrc/.
EPS_SELECTORS = ("numpy", "torch", "native")
# The key prefix of each field (``"eps"`` for ``eps_selector``) and its names.
STAGES = {"core": CORES, "dbscan": DBSCANS, "distances": DISTANCES, "eps": EPS_SELECTORS}

DeviceLike = torch.device | str


@dataclass(frozen=True)
class Plan:
    """The implementations one CF-CAM call runs, on ``device``.

    ``core``: "reference", "torch" or "triton"; ``dbscan``: "sklearn", "torch", "native" or
    "cuml"; ``distances``: "pdist", "float64" or "float32-certified"; ``eps_selector``:
    "numpy", "torch" or "native". ``str(plan)`` reads e.g. ``core:torch dbscan:native
    distances:float32-certified eps:native on cpu``. A combination no path runs is a
    ``ValueError``.
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

    @property
    def keys(self) -> tuple[str, str, str, str]:
        """The Plan's four ``cf.backend_status()`` keys: core, dbscan, distances, eps."""
        return (f"core:{self.core}", f"dbscan:{self.dbscan}", f"distances:{self.distances}",
                f"eps:{self.eps_selector}")

    @property
    def distance_dtype(self) -> torch.dtype:
        """The dtype the pairwise squared distances are held in."""
        return torch.float32 if self.distances == "float32-certified" else torch.float64

    def __str__(self) -> str:
        return f"{' '.join(self.keys)} on {self.device}"


def resolve_plan(backend: str, config: CFCAMConfig, device: DeviceLike) -> Plan:
    """The Plan for core ``backend`` and ``config.dbscan_backend`` on ``device``.

    ``"auto"`` picks the fastest usable implementation (core: triton on CUDA when usable,
    else torch; DBSCAN: native where built, else torch). A named backend that cannot run is
    a ``RuntimeError`` saying what to install or change; an unknown name a ``ValueError``.
    The reference core runs its own stages (SciPy, NumPy, scikit-learn) whatever
    ``config.dbscan_backend`` says.
    """
    device = torch.device(device)
    core = backends.pick(backend, device)
    if core == "reference":
        return Plan("reference", "sklearn", "pdist", "numpy", device)
    return clustering_plan(config.dbscan_backend, device, core)


def clustering_plan(dbscan_backend: str, device: DeviceLike, core: str = "torch") -> Plan:
    """The Plan of the batched clustering stage with DBSCAN backend ``dbscan_backend``
    (``"auto"`` allowed) on ``device``; ``core`` is recorded as given ("torch" or "triton").

    The compiled selector finds eps exactly when DBSCAN is native (the ops share their
    build); on the CPU they then work on certified float32 distances where float32
    products are IEEE (``certified.unavailable_reason``), elsewhere on float64 ones."""
    device = torch.device(device)
    dbscan = cluster.resolve(dbscan_backend, device)
    if dbscan != "native":
        return Plan(core, dbscan, "float64", "torch", device)
    distances = "float32-certified" if certified.unavailable_reason(device) is None else "float64"
    return Plan(core, "native", distances, "native", device)


def unavailable_reason(key: str, device: DeviceLike | None = None) -> str | None:
    """Why ``key`` (``"<stage>:<name>"``) cannot run on ``device`` here, or ``None``.

    Without a device: core:triton and dbscan:cuml are asked about CUDA, every other key
    about the CPU."""
    stage, _, name = key.partition(":")
    if name not in STAGES.get(stage, ()):
        raise ValueError(f"unknown backend key {key!r}; the keys are {list(all_keys())}")
    device = None if device is None else torch.device(device)
    if stage == "core":
        return backends.unavailable_reason(name, device)
    if stage == "dbscan" or (stage, name) == ("eps", "native"):
        return cluster.unavailable_reason(name, device)
    if (stage, name) == ("distances", "float32-certified"):
        return certified.unavailable_reason(device or torch.device("cpu"))
    return None


def all_keys() -> tuple[str, ...]:
    """Every ``"<stage>:<name>"`` key a Plan can hold."""
    return tuple(f"{stage}:{name}" for stage, names in STAGES.items() for name in names)


def status(device: DeviceLike | None = None) -> dict[str, str]:
    """Every key mapped to ``"available"`` or the reason it cannot run on ``device`` here
    (``unavailable_reason``); the native keys take theirs from ``_native.status()``."""
    return {key: unavailable_reason(key, device) or "available" for key in all_keys()}
