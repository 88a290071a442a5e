"""``cf.metrics``: the metrics of CAM maps, by their public names (they live in
``cfcam_fast.evaluation``)."""
# Importable from here as in earlier versions, though not metrics themselves:
from .cams.base import BaseCAM as BaseCAM
from .cams.capture import capture as capture
from .cams.capture import capture_classes as capture_classes
from .cams.model_state import eval_mode as eval_mode
from .cams.targets import class_indices as class_indices
from .core.checks import positive_int as positive_int
from .core.filters import gaussian_taps as gaussian_taps
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
from .evaluation.inputs import check_cam as check_cam
from .evaluation.inputs import check_classes as check_classes
from .evaluation.inputs import check_images as check_images
from .evaluation.inputs import check_images_maps as check_images_maps
from .evaluation.road import road
from .evaluation.sanity import randomization_sanity
from .evaluation.sensitivity import ClassSensitivity, class_sensitivity, explain_captured, robustness
from .evaluation.similarity import pearson, ssim

__all__ = ["BLUR_SIGMA", "THRESHOLD", "ClassSensitivity", "ConfidenceChange", "Curves", "DeletionInsertion",
           "average_drop", "blur", "class_sensitivity", "confidence_change", "deletion_insertion",
           "deletion_insertion_curves", "explain_captured", "increase_in_confidence", "pearson",
           "randomization_sanity", "road", "robustness", "ssim"]
