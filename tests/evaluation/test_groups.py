"""The registries ``evaluate`` runs over: the methods (``evaluation.methods``) and the metric
groups (``evaluation.groups``) with their sanity checkpoints. ``cfcam-fast evaluate`` runs
them in tests/cli/test_evaluate.py."""
from cfcam_fast.cams.base import BaseCAM

# The methods of the first version of `cfcam-fast evaluate`, first in the registry.
ORIGINAL = [f"CF-CAM {f}/{w}" for f in ("gaussian", "official") for w in ("softmax", "standardized", "linear")] \
    + ["Grad-CAM", "Grad-CAM++"]


def test_metrics_and_methods_are_registries():
    from cfcam_fast.evaluation.groups import METRICS
    from cfcam_fast.evaluation.methods import METHODS

    assert list(METHODS) == ORIGINAL + ["Eigen-CAM", "Smooth Grad-CAM++", "NormGrad", "Score-CAM"]
    assert all(issubclass(method.cam, BaseCAM) for method in METHODS.values())
    assert [m.name for m in METRICS] == ["confidence", "deletion", "road", "robustness", "sensitivity", "sanity"]
    assert all(callable(m.compute) and callable(m.columns) and callable(m.applies) for m in METRICS)


def test_sanity_checkpoints():
    from cfcam_fast.evaluation.groups import sanity_checkpoints

    assert sanity_checkpoints(99, 2) == [0, 98]
    assert sanity_checkpoints(99, 1) == [98]
    assert sanity_checkpoints(99, 3) == [0, 49, 98]
    assert sanity_checkpoints(3, 10) == [0, 1, 2]
