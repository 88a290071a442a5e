"""Which DBSCAN backends can run here, what "auto" picks, and the Plan of the batched
clustering stage (``clustering_plan``)."""
from __future__ import annotations

import torch

from .. import native, triton_kernels
from ..plan import DBSCANS, DeviceLike, Plan
from . import certified, cuml_dbscan

BACKENDS = DBSCANS


def unavailable_reason(backend: str, device: torch.device | None = None) -> str | None:
    """Why DBSCAN backend ``backend`` cannot run on ``device`` here, or ``None``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown DBSCAN backend {backend!r}; choose one of {BACKENDS + ('auto',)}")
    if backend == "native":
        if native.available(device if device is not None else torch.device("cpu")):
            return None
        return native.status()["native-cuda" if device is not None and device.type == "cuda" else "native-cpu"]
    if backend == "cuml":
        return cuml_dbscan.unavailable_reason(device)
    if backend == "fused":
        return triton_kernels.unavailable_reason(device)
    return None


def resolve(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` on ``device``; a named one must be usable."""
    if backend == "auto":
        return "native" if unavailable_reason("native", device) is None else "torch"
    reason = unavailable_reason(backend, device)
    if reason is not None:
        raise RuntimeError(f"DBSCAN backend {backend!r} is not available: {reason}")
    return backend


def clustering_plan(dbscan_backend: str, device: DeviceLike, core: str = "torch") -> Plan:
    """The Plan of the batched clustering stage with DBSCAN backend ``dbscan_backend``
    (``"auto"`` allowed) on ``device``; ``core`` is recorded as given ("torch" or "triton").

    The compiled selector finds eps exactly when DBSCAN is native (the ops share their
    build); on the CPU they then work on certified float32 distances where float32
    products are IEEE (``certified.unavailable_reason``), elsewhere on float64 ones. The
    fused Triton stage selects, labels and certifies its float32 distances itself."""
    device = torch.device(device)
    dbscan = resolve(dbscan_backend, device)
    if dbscan == "fused":
        return Plan(core, "fused", "float32-fused", "fused", device)
    if dbscan != "native":
        return Plan(core, dbscan, "float64", "torch", device)
    distances = "float32-certified" if certified.unavailable_reason(device) is None else "float64"
    return Plan(core, "native", distances, "native", device)
