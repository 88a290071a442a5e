"""cfcam_fast: fast CF-CAM (cluster-filtered Grad-CAM) for PyTorch models."""
from . import cluster, metrics, viz
from .baselines import GradCAM, GradCAMPlusPlus
from .cam import CFCAM
from .comparators import EigenCAM, NormGrad, ScoreCAM
from .config import CFCAMConfig, CFCAMResult
from .core import cfcam, cfcam_explain
from .plan import DeviceLike as _DeviceLike
from .plan import status as _plan_status
from .realtime import FrameError, FrameResult, RealtimeCFCAM
from .smooth_gradcam import SmoothGradCAMPlusPlus

__version__ = "0.1.0"


def backend_status(device: _DeviceLike | None = None) -> dict[str, str]:
    """Every implementation a plan can name (``result.plan``, ``cfcam_fast.plan``), as
    ``"core:<name>"``, ``"dbscan:<name>"``, ``"distances:<name>"`` and ``"eps:<name>"``,
    mapped to "available" or the reason it cannot run here and what to install or change.

    ``device`` (e.g. ``"cuda"``) asks about that device; by default core:triton and
    dbscan:cuml are asked about CUDA and the rest about the CPU."""
    return _plan_status(device)


def __getattr__(name: str):
    """``cf.kernels`` imports the Triton kernels (and Triton) only when first used."""
    if name == "kernels":
        import importlib

        return importlib.import_module(f"{__name__}.kernels")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CFCAM", "CFCAMConfig", "CFCAMResult", "EigenCAM", "FrameError", "FrameResult", "GradCAM",
           "GradCAMPlusPlus", "NormGrad", "RealtimeCFCAM", "ScoreCAM", "SmoothGradCAMPlusPlus", "backend_status",
           "cfcam", "cfcam_explain", "cluster", "metrics", "viz"]
