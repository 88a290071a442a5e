"""cfcam_fast: fast CF-CAM (cluster-filtered Grad-CAM) for PyTorch models.

The package is built in layers, each importing only those below it:

- ``core``: the CF-CAM algorithm on captured tensors, its backends and compiled ops;
- ``cams``: CAMs on a model (capture, CF-CAM, Grad-CAM and the comparators, real time);
- ``evaluation``: metrics, ROAD, sanity checks and ``evaluate``;
- ``data``, ``benchmark``, ``cli``: the application (models, photos, datasets, videos;
  the benchmark runner; the ``cfcam-fast`` command).

``cf.metrics``, ``cf.cluster``, ``cfcam_fast.plan`` and ``cf.viz`` are the public faces of
what they name; ``cf.kernels`` holds the Triton kernels.
"""
from typing import Any

from . import cluster, metrics, viz
from .cams import (
    CFCAM,
    EigenCAM,
    FrameError,
    FrameResult,
    GradCAM,
    GradCAMPlusPlus,
    NormGrad,
    RealtimeCFCAM,
    ScoreCAM,
    SmoothGradCAMPlusPlus,
)
from .core.config import CFCAMConfig, CFCAMResult
from .core.explain import cfcam, cfcam_explain
from .core.plan import DeviceLike as _DeviceLike
from .core.resolve import status as _plan_status

__version__ = "0.2.0"


def backend_status(device: _DeviceLike | None = None) -> dict[str, str]:
    """Every implementation a plan can name (``result.plan``, ``cfcam_fast.plan``), as
    ``"core:<name>"``, ``"dbscan:<name>"``, ``"distances:<name>"`` and ``"eps:<name>"``,
    mapped to "available" or the reason it cannot run here and what to install or change.

    ``device`` (e.g. ``"cuda"``) asks about that device; by default core:triton and
    dbscan:cuml are asked about CUDA and the rest about the CPU."""
    return _plan_status(device)


def __getattr__(name: str) -> Any:
    """``cf.kernels`` imports the Triton kernels (and Triton) only when first used."""
    if name == "kernels":
        import importlib

        return importlib.import_module(f"{__name__}.kernels")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CFCAM", "CFCAMConfig", "CFCAMResult", "EigenCAM", "FrameError", "FrameResult", "GradCAM",
           "GradCAMPlusPlus", "NormGrad", "RealtimeCFCAM", "ScoreCAM", "SmoothGradCAMPlusPlus", "backend_status",
           "cfcam", "cfcam_explain", "cluster", "metrics", "viz"]
