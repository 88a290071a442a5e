"""cfcam_fast.metrics.road: the imputation, the thresholds and the scores against grad-cam's ROAD."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_state_unchanged, chelsea_batch, hooks_left, images, model_state, tiny_cnn
from pytorch_grad_cam.metrics import road as gc_road
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import eigsh

import cfcam_fast.metrics as metrics
from cfcam_fast.evaluation.road import SOLVER_TOLERANCE, impute, percentile_thresholds

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def smooth_maps(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """CAM-like maps in [0, 1]: 4x4 noise upsampled bilinearly."""
    coarse = torch.rand(batch, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def error_bound(image: torch.Tensor, keep: torch.Tensor) -> float:
    """Largest admissible |ours - grad-cam| per pixel for one image's imputation.

    Our solver stops at ||r|| <= SOLVER_TOLERANCE * ||b|| per channel, so the float64
    error is at most SOLVER_TOLERANCE * ||b|| / lambda_min(A) (A the system matrix, b its
    right-hand side, both built by grad-cam here); both results are then rounded to
    float32 (half an ulp each, relative FLOAT32_EPS / 2). The max-norm is below the 2-norm.
    """
    A, b = gc_road.NoisyLinearImputer.setup_sparse_system(keep.float().numpy(), image.numpy(),
                                                          gc_road.neighbors_weights)
    if A.shape[0] == 0:
        return 0.0
    system = -csc_matrix(A)  # grad-cam's matrix is negative definite
    if A.shape[0] < 400:
        smallest = float(np.linalg.eigvalsh(system.toarray())[0])
    else:
        smallest = float(eigsh(system, k=1, sigma=0, which="LM", return_eigenvectors=False)[0])
    solver = SOLVER_TOLERANCE * float(np.linalg.norm(b, axis=0).max()) / smallest
    return solver + FLOAT32_EPS * float(image.abs().max())


def check_imputation(image: torch.Tensor, keep: torch.Tensor) -> None:
    ours = impute(image[None], keep[None])[0]
    theirs = gc_road.NoisyLinearImputer(noise=0)(image, keep.float())
    assert torch.equal(ours[:, keep], image[:, keep])  # kept pixels are copied exactly
    diff = float((ours - theirs).abs().max())
    assert diff <= error_bound(image, keep), diff


@pytest.mark.parametrize("shape,fraction", [((5, 7), 0.3), ((16, 16), 0.1), ((16, 16), 0.9), ((12, 20), 0.5)])
def test_imputation_matches_grad_cam_on_random_masks(shape, fraction):
    gen = torch.Generator().manual_seed(3)
    image = torch.randn(3, *shape, generator=gen)
    keep = torch.rand(shape, generator=gen) >= fraction
    check_imputation(image, keep)


def test_imputation_matches_grad_cam_on_contiguous_masks():
    image = images(1, 32)[0]
    m = smooth_maps(1, 32)[0]
    for p in (10, 50, 90):
        check_imputation(image, m < float(np.percentile(m.numpy(), p)))


def test_imputation_edge_cases():
    image = images(2, 8)
    everything = torch.ones(2, 8, 8, dtype=torch.bool)
    assert torch.equal(impute(image, everything), image)
    # Nothing kept: nothing to interpolate from; zeros, as grad-cam's solver returns.
    assert torch.equal(impute(image, ~everything), torch.zeros_like(image))
    assert torch.equal(gc_road.NoisyLinearImputer(noise=0)(image[0], torch.zeros(8, 8)), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="keep must be a bool"):
        impute(image, everything.float())
    half = torch.arange(8)[None, :, None].expand(2, 8, 8) < 4
    with pytest.warns(RuntimeWarning, match="stopped after 1 conjugate-gradient iterations"):
        impute(image, half, max_iterations=1)


@pytest.mark.slow
def test_imputation_matches_grad_cam_on_a_photo():
    image = chelsea_batch()[0]
    m = smooth_maps(1, 224, seed=5)[0]
    check_imputation(image, m < float(np.percentile(m.numpy(), 10)))  # 90% of the pixels removed


def test_percentile_thresholds_are_numpys():
    gen = torch.Generator().manual_seed(0)
    maps = torch.cat([torch.rand(3, 9, 11, generator=gen),
                      (torch.rand(2, 9, 11, generator=gen) * 4).floor() / 4,  # many ties
                      torch.zeros(1, 9, 11)])
    percentiles = (1, 10, 33.3, 50, 75, 90, 99)
    ours = percentile_thresholds(maps, percentiles)
    for b in range(maps.shape[0]):
        for j, p in enumerate(percentiles):
            assert ours[b, j].item() == np.percentile(maps[b].numpy(), p)  # bit for bit


def grad_cam_road(model, x, maps, targets, order, percentiles, monkeypatch):
    """grad-cam's ROAD classes with the imputer's noise set to 0."""
    class NoiselessImputer(gc_road.NoisyLinearImputer):
        def __init__(self):
            super().__init__(noise=0)

    monkeypatch.setattr(gc_road, "NoisyLinearImputer", NoiselessImputer)
    cls = {"morf": gc_road.ROADMostRelevantFirstAverage, "lerf": gc_road.ROADLeastRelevantFirstAverage,
           "combined": gc_road.ROADCombined}[order]
    with torch.no_grad():
        return cls(list(percentiles))(x, maps.numpy(), targets, model)


@pytest.mark.parametrize("order", ["morf", "lerf", "combined"])
@pytest.mark.parametrize("score", ["logit", "probability"])
def test_scores_match_grad_cam(order, score, monkeypatch):
    model = tiny_cnn().eval()
    x = images(3, 16)
    maps = smooth_maps(3, 16)
    classes = [1, 4, 0]
    target = ClassifierOutputTarget if score == "logit" else ClassifierOutputSoftmaxTarget
    percentiles = (10, 30, 50, 70, 90)
    theirs = grad_cam_road(model, x, maps, [target(c) for c in classes], order, percentiles, monkeypatch)
    ours = metrics.road(model, x, maps, classes, percentiles=percentiles, order=order, noise=0, score=score)
    assert ours.scores.shape == (3,) and ours.per_percentile.shape == (3, 5)
    assert ours.percentiles.tolist() == list(percentiles)
    # The imputed images agree to ~1e-6 (the tests above) and the thresholds exactly, so the
    # outputs of this float32 net differ by its rounding noise (4e-8 seen): 1e-6 on values of size ~1.
    np.testing.assert_allclose(ours.scores.numpy(), theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.scores, ours.per_percentile.mean(1), rtol=0, atol=0)


def test_model_unchanged_and_targets_default_to_argmax():
    model = tiny_cnn()
    model.train()
    x = images(2, 16)
    maps = smooth_maps(2, 16)
    before = model_state(model)
    result = metrics.road(model, x, maps, percentiles=(50,), order="morf")
    assert_state_unchanged(model, before)
    assert not hooks_left(model)
    with torch.no_grad():
        classes = model.eval()(x).argmax(1)
    model.train()
    explicit = metrics.road(model, x, maps, classes, percentiles=(50,), order="morf")
    torch.testing.assert_close(result.scores, explicit.scores, rtol=0, atol=0)


def test_chunking_gives_the_same_result():
    model = tiny_cnn()
    x = images(4, 16)
    maps = smooth_maps(4, 16)
    one = metrics.road(model, x, maps, batch_size=1000, noise=0.05, seed=7)
    many = metrics.road(model, x, maps, batch_size=5, noise=0.05, seed=7)
    # Every plane's solve and noise draw is independent of its chunk; only the float32 net's
    # kernels may round differently for another batch size (1e-6 on values of size ~1).
    torch.testing.assert_close(one.per_percentile, many.per_percentile, rtol=0, atol=1e-6)
    other_seed = metrics.road(model, x, maps, batch_size=1000, noise=0.05, seed=8)
    assert not torch.equal(one.per_percentile, other_seed.per_percentile)


@pytest.mark.parametrize("kwargs,message", [
    ({"order": "best"}, "order must be one of"),
    ({"percentiles": ()}, "percentiles must be"),
    ({"percentiles": (0, 50)}, "percentiles must be"),
    ({"percentiles": (50, 100)}, "percentiles must be"),
    ({"noise": -0.1}, "noise must be"),
    ({"seed": 1.5}, "seed must be an int"),
    ({"score": "accuracy"}, "score must be one of"),
    ({"batch_size": 0}, "batch_size must be"),
])
def test_bad_arguments(kwargs, message):
    model = tiny_cnn()
    with pytest.raises(ValueError, match=message):
        metrics.road(model, images(2, 16), smooth_maps(2, 16), **kwargs)


def test_bad_inputs():
    model = tiny_cnn()
    with pytest.raises(ValueError, match="maps must be a"):
        metrics.road(model, images(2, 16), smooth_maps(2, 8))
    with pytest.raises(ValueError, match="maps must be floating point"):
        metrics.road(model, images(2, 16), torch.ones(2, 16, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match="target classes must lie in"):
        metrics.road(model, images(2, 16), smooth_maps(2, 16), [0, 9], percentiles=(50,))
    with pytest.raises(ValueError, match="targets for a batch"):
        metrics.road(model, images(2, 16), smooth_maps(2, 16), [0])
