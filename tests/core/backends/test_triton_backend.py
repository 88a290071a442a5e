"""The ``triton`` backend (steps 5-7 as Triton kernels) against the reference and torch.

Without a GPU the kernels run on CPU tensors in Triton's interpreter (the conftest sets
``TRITON_INTERPRET=1`` before Triton is imported); the ``gpu`` tests run them compiled on
CUDA at realistic sizes. Tolerances: labels come from the torch backend's clustering, so
they must be identical; eps to 1e-12 relative (see tests/core/backends/test_torch_backend.py). Channel weights
are float32 reductions over at most 28*28 values (and, for clusters, over up to 2048 members) against the reference's
float64: 1e-5 of the largest |w|. alpha lies in [0, 1]: 1e-5 relative plus 1e-7. Maps are
float32 sums of up to 2048 weighted channels normalised to [0, 1]: 1e-5 absolute.
"""
import copy

import pytest
import torch
from helpers import assert_results_match, efficientnet_lite0, images, structured, tiny_cnn

import cfcam_fast as cf
from cfcam_fast.cams.capture import capture
from cfcam_fast.core import backends
from cfcam_fast.data.images import preprocess
from cfcam_fast.data.photos import bundled_photos
from cfcam_fast.kernels._launch import interpreted

interpreter = pytest.mark.skipif(not interpreted(), reason="Triton was not imported under TRITON_INTERPRET=1")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")



def explain_all(A, G, size, config, device, backends_=("reference", "torch", "triton")):
    A, G = A.to(device), G.to(device)
    return [cf.cfcam_explain(A, G, size, config, backend=name) for name in backends_]


@interpreter
@pytest.mark.parametrize("filter_name, weighting", [("gaussian", "softmax"), ("official", "softmax"),
                                                    ("gaussian", "standardized"), ("official", "linear")])
def test_interpreted_backend_matches_reference_and_torch(filter_name, weighting):
    A = structured(2, 40, 7, 6, seed=4)
    G = torch.randn(A.shape, generator=torch.Generator().manual_seed(5)) * 1e-2
    config = cf.CFCAMConfig(filter=filter_name, weighting=weighting)
    ref, by_torch, got = explain_all(A, G, (24, 20), config, "cpu")
    assert int(ref.labels.amax()) >= 1, "the data should give several clusters"
    assert_results_match(got, ref, 1e-5)
    assert_results_match(got, by_torch, 1e-5)


@interpreter
def test_interpreted_backend_filtered_maps_and_half_input():
    A = structured(1, 32, 5, 5, seed=6)
    G = torch.randn(A.shape, generator=torch.Generator().manual_seed(7)) * 1e-2
    got = cf.cfcam_explain(A, G, (10, 10), backend="triton", return_filtered=True)
    ref = cf.cfcam_explain(A, G, (10, 10), backend="reference", return_filtered=True)
    for f_got, f_ref in zip(got.filtered, ref.filtered):
        torch.testing.assert_close(f_got, f_ref, rtol=0, atol=1e-5 * float(f_ref.abs().amax()) + 1e-30)
    half = cf.cfcam_explain(A.half(), G.half(), (10, 10), backend="triton")
    assert_results_match(half, cf.cfcam_explain(A.half(), G.half(), (10, 10), backend="torch"), 1e-5)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("filter_name", ["gaussian", "official"])
@pytest.mark.parametrize("weighting", ["softmax", "standardized", "linear"])
@pytest.mark.parametrize("shape", [(4, 2048, 7, 7), (2, 256, 14, 14)], ids=["resnet50-last", "14x14"])
def test_cuda_backend_matches_reference(filter_name, weighting, shape):
    A = structured(*shape, seed=sum(shape))
    G = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 1e-3
    ref, by_torch, got = explain_all(A, G, (224, 224), cf.CFCAMConfig(filter=filter_name, weighting=weighting),
                                     "cuda")
    assert got.maps.is_cuda
    assert_results_match(got, ref, 1e-5)
    assert_results_match(got, by_torch, 1e-5)


@pytest.mark.gpu
@needs_cuda
def test_cuda_model_and_auto_pick_triton():
    model = tiny_cnn().cuda()
    x = images().cuda()
    assert backends.resolve("auto", x.device).__name__ == "cfcam_fast.core.backends.triton_backend"
    with cf.CFCAM(model, target_layers=[model.features], backend="triton") as cam:
        got = cam.explain(x)
    with cf.CFCAM(model, target_layers=[model.features], backend="reference") as cam:
        ref = cam.explain(x)
    assert_results_match(got, ref, 1e-5)


@pytest.mark.gpu
@needs_cuda
def test_cuda_real_photos_efficientnet_lite0():
    """Real photos through the real model on CUDA: the triton and torch backends on the
    captured CUDA tensors against the reference on the same tensors."""
    model, layer = efficientnet_lite0()
    model = copy.deepcopy(model).cuda()
    x = preprocess([image for _, image in bundled_photos()[:4]]).cuda()
    got = capture(model, x, [model.get_submodule(layer)])
    A, G = got.activations[0].detach(), got.gradients[0].detach()
    for filter_name in ("gaussian", "official"):
        config = cf.CFCAMConfig(filter=filter_name)
        ref = cf.cfcam_explain(A.cpu(), G.cpu(), (224, 224), config, backend="reference")
        for name in ("triton", "torch"):
            assert_results_match(cf.cfcam_explain(A, G, (224, 224), config, backend=name), ref, 1e-5)


@pytest.mark.gpu
@needs_cuda
def test_cuda_bfloat16_input_matches_torch():
    """bf16 runs only compiled (the interpreter has no bf16): triton against torch on it."""
    A = structured(2, 512, 7, 7, seed=8).bfloat16()
    G = (torch.randn(A.shape, generator=torch.Generator().manual_seed(9)) * 1e-3).bfloat16()
    by_torch, got = explain_all(A, G, (224, 224), cf.CFCAMConfig(), "cuda", ("torch", "triton"))
    assert_results_match(got, by_torch, 1e-5)
