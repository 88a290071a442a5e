"""The ``fused`` DBSCAN backend as the package exposes it: ``CFCAMConfig(dbscan_backend="fused")``
in CF-CAM calls, ``cf.cluster.dbscan(..., backend="fused")``, its plan keys and its refusals.

The kernels themselves are checked step by step in ``test_pairs.py``. Here each whole call
is compared with the reference. Without a GPU the kernels run under Triton's interpreter
on small inputs; the ``gpu`` tests run them compiled, at real sizes and on real photos.
Under the interpreter the stage runs with the small knobs of ``test_pairs.py`` (the default
ones, run there once as ``test_production_knobs_on_a_resnet_like_batch``, take about 30 s
per call interpreted). Tolerances are those of ``test_torch_backend.py``: labels identical, eps to 1e-12 relative
(the fused stage takes eps from the exact sums of squared differences, the reference from
``pdist``: one float64 distance by two formulas), float32 channel weights to 1e-6 of the
largest |w| with the torch core and 1e-5 with the triton core (its own tolerance,
``test_triton_backend.py``), weights to 1e-5 relative plus 1e-7, maps in [0, 1] to 1e-5
absolute.
"""
import copy
import functools

import numpy as np
import pytest
import torch
from helpers import assert_results_match, efficientnet_lite0, images, point_cloud, structured, tiny_cnn
from sklearn.cluster import DBSCAN

import cfcam_fast as cf
from cfcam_fast import cluster
from cfcam_fast.cams.capture import capture
from cfcam_fast.data.images import preprocess
from cfcam_fast.data.photos import bundled_photos
from cfcam_fast.kernels import pairs
from cfcam_fast.kernels._launch import interpreted
from cfcam_fast.plan import Plan

needs_kernels = pytest.mark.skipif(not (interpreted() or torch.cuda.is_available()),
                                   reason="no CUDA device and Triton was not imported under TRITON_INTERPRET=1")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FUSED = cf.CFCAMConfig(dbscan_backend="fused")
FUSED_KEYS = "dbscan:fused distances:float32-fused eps:fused"
WEIGHTS_RTOL = {"torch": 1e-6, "triton": 1e-5}


@pytest.fixture(autouse=True)
def small_knobs_when_interpreted(monkeypatch):
    if DEVICE == "cpu":
        knobs = dict(block=32, hist_bins=64, collect_capacity=64, sample_size=256)
        for name in ("fused_eps_and_labels", "fused_labels"):
            monkeypatch.setattr(pairs, name, functools.partial(getattr(pairs, name), **knobs))



@needs_kernels
@pytest.mark.parametrize("core", ["torch", "triton"])
@pytest.mark.parametrize("weighting", ["softmax", "linear"])
def test_cfcam_with_fused_dbscan_matches_reference(core, weighting):
    device = DEVICE
    A = structured(2, 40, 6, 5, seed=11)
    G = torch.randn(A.shape, generator=torch.Generator().manual_seed(12)) * 1e-2
    config = cf.CFCAMConfig(dbscan_backend="fused", weighting=weighting)
    ref = cf.cfcam_explain(A, G, (20, 16), config.replace(dbscan_backend="auto"), backend="reference")
    got = cf.cfcam_explain(A.to(device), G.to(device), (20, 16), config, backend=core)
    assert int(ref.labels.amax()) >= 1, "the data should give several clusters"
    assert FUSED_KEYS in str(got.plan)
    assert_results_match(got, ref, WEIGHTS_RTOL[core])


@needs_kernels
@pytest.mark.parametrize("kind", ["blobs", "chain", "grid", "duplicates", "relu"])
def test_dbscan_fused_equals_sklearn(kind):
    rng = np.random.default_rng(len(kind))
    points = point_cloud(kind, 45, rng).astype(np.float32)
    eps = 1.0 if kind != "relu" else 3.5  # the chain and the grid: eps equal to many distances
    device = DEVICE
    got = cluster.dbscan(torch.from_numpy(points).to(device), eps, 3, backend="fused")
    want = DBSCAN(eps=eps, min_samples=3).fit(points.astype(np.float64)).labels_
    np.testing.assert_array_equal(got.cpu().numpy(), want)


@needs_kernels
def test_dbscan_fused_refuses_float64_points():
    with pytest.raises(ValueError, match="float32 points"):
        cluster.dbscan(torch.zeros(5, 2, dtype=torch.float64), 1.0, 2, backend="fused")


def test_the_three_fused_keys_go_together():
    with pytest.raises(ValueError, match="all three or none"):
        Plan("torch", "fused", "float64", "torch", "cpu")
    with pytest.raises(ValueError, match="all three or none"):
        Plan("torch", "native", "float32-fused", "native", "cpu")
    assert not Plan("torch", "fused", "float32-fused", "fused", "cpu").holds_distances


def test_auto_never_picks_fused():
    assert "fused" not in str(cf.cfcam_explain(structured(1, 12, 4, 4, seed=1), torch.ones(1, 12, 4, 4),
                                               (8, 8), backend="torch").plan)
    assert "dbscan:fused" in cf.backend_status("cpu")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("shape", [(4, 2048, 7, 7), (8, 512, 7, 7), (2, 256, 14, 14)],
                         ids=["resnet50-last", "resnet18-last", "14x14"])
def test_cuda_fused_matches_reference_at_real_sizes(shape):
    A = structured(*shape, seed=sum(shape))
    G = torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 1e-3
    ref = cf.cfcam_explain(A, G, (224, 224), backend="reference")
    for core in ("torch", "triton"):
        assert_results_match(cf.cfcam_explain(A.cuda(), G.cuda(), (224, 224), FUSED, backend=core), ref,
                             WEIGHTS_RTOL[core])


@pytest.mark.gpu
@needs_cuda
def test_cuda_fused_real_photos_efficientnet_lite0():
    """Real photos through the real model: the fused stage on the captured CUDA tensors
    against the reference on the same tensors."""
    model, layer = efficientnet_lite0()
    model = copy.deepcopy(model).cuda()
    x = preprocess([image for _, image in bundled_photos()[:4]]).cuda()
    got = capture(model, x, [model.get_submodule(layer)])
    A, G = got.activations[0].detach(), got.gradients[0].detach()
    ref = cf.cfcam_explain(A.cpu(), G.cpu(), (224, 224), backend="reference")
    assert_results_match(cf.cfcam_explain(A, G, (224, 224), FUSED, backend="triton"), ref, WEIGHTS_RTOL["triton"])


@pytest.mark.gpu
@needs_cuda
def test_cuda_realtime_with_fused_dbscan_matches_reference():
    model, layer = efficientnet_lite0()
    model = copy.deepcopy(model).cuda()
    x = preprocess([bundled_photos()[0][1]]).cuda()
    rt = cf.RealtimeCFCAM(model, model.get_submodule(layer), x, FUSED)
    assert FUSED_KEYS in str(rt.plan)
    for _ in range(3):  # eager, captured, replayed
        got = rt.explain(x)
    with cf.CFCAM(model, target_layers=[model.get_submodule(layer)], backend="reference") as cam:
        ref = cam.explain(x)
    assert_results_match(got, ref, WEIGHTS_RTOL["triton"])  # the plan may choose either core on CUDA


@needs_kernels
def test_realtime_with_fused_dbscan_matches_reference():
    model = tiny_cnn().to(DEVICE)
    x = images(batch=2).to(DEVICE)
    rt = cf.RealtimeCFCAM(model, model.features, x, FUSED, head=None)
    assert FUSED_KEYS in str(rt.plan)
    got = rt.explain(x)
    with cf.CFCAM(model, target_layers=[model.features], backend="reference") as cam:
        assert_results_match(got, cam.explain(x), 1e-6)
