"""cfcam_fast: fast CF-CAM (cluster-filtered Grad-CAM) for PyTorch models."""
from . import backends as _backends
from .cam import CFCAM
from .config import CFCAMConfig, CFCAMResult
from .core import cfcam, cfcam_explain

__version__ = "0.1.0"


def backends() -> dict[str, str]:
    """Every backend mapped to "available" or the reason it is not usable here."""
    return _backends.status()


__all__ = ["CFCAM", "CFCAMConfig", "CFCAMResult", "backends", "cfcam", "cfcam_explain"]
