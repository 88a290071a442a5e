"""cfcam_fast: fast CF-CAM (cluster-filtered Grad-CAM) for PyTorch models."""
from . import cluster, metrics, viz
from .backends import status as _core_status
from .baselines import GradCAM, GradCAMPlusPlus
from .cam import CFCAM
from .cluster import status as _dbscan_status
from .config import CFCAMConfig, CFCAMResult
from .core import cfcam, cfcam_explain
from .realtime import FrameError, FrameResult, RealtimeCFCAM

__version__ = "0.1.0"


def backend_status() -> dict[str, str]:
    """Every backend, core (``reference``, ``torch``, ``triton``) and DBSCAN
    (``dbscan:sklearn``, ``dbscan:torch``, ``dbscan:native``, ``dbscan:cuml``), mapped to
    "available" or the reason it cannot run here and what to install."""
    status = dict(_core_status())
    status.update({f"dbscan:{name}": reason for name, reason in _dbscan_status().items()})
    return status


def __getattr__(name: str):
    """``cf.kernels`` imports the Triton kernels (and Triton) only when first used."""
    if name == "kernels":
        import importlib

        return importlib.import_module(f"{__name__}.kernels")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CFCAM", "CFCAMConfig", "CFCAMResult", "FrameError", "FrameResult", "GradCAM", "GradCAMPlusPlus",
           "RealtimeCFCAM", "backend_status",
           "cfcam", "cfcam_explain", "cluster", "metrics", "viz"]
