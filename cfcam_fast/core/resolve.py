"""From the user's choices to a ``Plan``, and what can run on this machine.

``resolve_plan`` turns a core backend and ``config.dbscan_backend`` (``"auto"`` included)
into the ``Plan`` a call follows; the stages then check nothing global again. ``status()``
(``cf.backend_status()``) maps every key a Plan can hold to ``"available"`` or the reason
it cannot run here, with what to install or change.
"""
from __future__ import annotations

import torch

from . import backends, cluster
from .cluster import certified
from .config import CFCAMConfig
from .plan import STAGES, DeviceLike, Plan


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
    return cluster.clustering_plan(config.dbscan_backend, device, core)


def unavailable_reason(key: str, device: DeviceLike | None = None) -> str | None:
    """Why ``key`` (``"<stage>:<name>"``) cannot run on ``device`` here, or ``None``.

    Without a device: core:triton and dbscan:cuml are asked about CUDA, every other key
    about the CPU."""
    stage, _, name = key.partition(":")
    if name not in STAGES.get(stage, ()):
        raise ValueError(f"unknown backend key {key!r}; the keys are {list(all_keys())}")
    where = None if device is None else torch.device(device)
    if stage == "core":
        return backends.unavailable_reason(name, where)
    if stage == "dbscan" or (stage, name) in (("eps", "native"), ("eps", "fused")):
        return cluster.unavailable_reason(name, where)
    if (stage, name) == ("distances", "float32-fused"):
        return cluster.unavailable_reason("fused", where)
    if (stage, name) == ("distances", "float32-certified"):
        return certified.unavailable_reason(where or torch.device("cpu"))
    return None


def all_keys() -> tuple[str, ...]:
    """Every ``"<stage>:<name>"`` key a Plan can hold."""
    return tuple(f"{stage}:{name}" for stage, names in STAGES.items() for name in names)


def status(device: DeviceLike | None = None) -> dict[str, str]:
    """Every key mapped to ``"available"`` or the reason it cannot run on ``device`` here
    (``unavailable_reason``); the native keys take theirs from ``native.status()``."""
    return {key: unavailable_reason(key, device) or "available" for key in all_keys()}
