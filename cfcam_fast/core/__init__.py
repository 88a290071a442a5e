"""The CF-CAM algorithm on captured tensors (docs/algorithm.md), the bottom layer.

``explain`` (``cfcam``, ``cfcam_explain``) runs steps 1-7 on activations and gradients
someone captured; ``config`` holds the parameters and the result type; ``plan`` names the
implementations of each stage and ``resolve`` picks them; ``backends`` are the cores
(reference, torch, triton), ``cluster`` the DBSCAN backends, ``selection`` and
``formulas`` the exact order statistics, ``filters`` and ``output`` steps 5 and 7,
``native`` the compiled ops of csrc/, ``checks`` the argument checks every layer shares,
``exportable`` the core in standard operators that exported frames run.

May import: torch, NumPy, SciPy, scikit-learn and ``cfcam_fast.kernels``; nothing else of
the package. The reference backend imports no fast path.
"""
from .config import CFCAMConfig, CFCAMResult
from .explain import cfcam, cfcam_explain

__all__ = ["CFCAMConfig", "CFCAMResult", "cfcam", "cfcam_explain"]
