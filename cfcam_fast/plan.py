"""``cfcam_fast.plan``: which implementation computes each stage of a call (``Plan``,
``str(result.plan)``) and what can run here (``status``); it lives in
``cfcam_fast.core.plan`` and ``cfcam_fast.core.resolve``."""
from .core.cluster import clustering_plan
from .core.plan import CORES, DBSCANS, DISTANCES, EPS_SELECTORS, STAGES, DeviceLike, Plan
from .core.resolve import all_keys, resolve_plan, status, unavailable_reason

__all__ = ["CORES", "DBSCANS", "DISTANCES", "EPS_SELECTORS", "STAGES", "DeviceLike", "Plan", "all_keys",
           "clustering_plan", "resolve_plan", "status", "unavailable_reason"]
