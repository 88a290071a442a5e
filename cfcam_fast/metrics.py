"""``cf.metrics``: the metrics of CAM maps, by their public names (they live in
``cfcam_fast.evaluation``)."""
from .evaluation.faithfulness import (
    BLUR_SIGMA,
    THRESHOLD,
    ConfidenceChange,
    Curves,
    DeletionInsertion,
    average_drop,
    blur,
    confidence_change,
    deletion_insertion,
    deletion_insertion_curves,
    increase_in_confidence,
)
from .evaluation.road import road
from .evaluation.sanity import randomization_sanity
from .evaluation.sensitivity import ClassSensitivity, class_sensitivity, explain_captured, robustness
from .evaluation.similarity import pearson, ssim

__all__ = ["BLUR_SIGMA", "THRESHOLD", "ClassSensitivity", "ConfidenceChange", "Curves", "DeletionInsertion",
           "average_drop", "blur", "class_sensitivity", "confidence_change", "deletion_insertion",
           "deletion_insertion_curves", "explain_captured", "increase_in_confidence", "pearson",
           "randomization_sanity", "road", "robustness", "ssim"]
# Also importable from here, as in earlier versions (not part of the metrics proper):
# BaseCAM, capture, capture_classes, eval_mode, class_indices, positive_int, gaussian_taps and
# the check_* functions.
