"""How good an explanation is: faithfulness (confidence change, deletion and insertion,
ROAD), robustness and class sensitivity, the randomisation sanity check, map similarity,
bootstrap intervals, and ``evaluate``, which compares the registered CAM methods
(``methods.METHODS``) with the metric groups (``groups.METRICS``) on a batch of images.

May import ``core`` and ``cams``; never ``data``, ``benchmark`` or ``cli``.
"""
from .evaluate import Evaluation, Evaluator, evaluate
from .groups import Settings

__all__ = ["Evaluation", "Evaluator", "Settings", "evaluate"]
