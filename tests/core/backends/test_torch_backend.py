"""The batched ``torch`` backend against the reference, on random and on real inputs.

Tolerances: labels must be identical (both paths take eps and DBSCAN membership from
float64 distances; docs/exactness.md, "Ties at eps"). eps (float64) agrees to 1e-12 relative: the
reference takes differences, the fast path an augmented matrix product, two float64
formulae for one distance. Channel weights are float32 reductions over
at most 28*28 values against the reference's float64, so they agree to 1e-6 of the
largest |w| (the filtered cluster means, summed over up to 2048 members, to 1e-5 of their
largest value). Maps are float32 sums of up to 2048 weighted channels, normalised to [0, 1]:
agreement to 1e-5 absolute leaves room for float32 rounding only. The same holds at extreme
scales (subnormal values, values near float32's maximum) and on the static-shape path
``RealtimeCFCAM`` runs (fixed shapes, no host synchronisation: traced whole by
``torch.compile(fullgraph=True)``).
"""
import numpy as np
import pytest
import torch
import torchvision
from helpers import captured_pair, efficientnet_lite0, needs_native, structured

import cfcam_fast as cf
import cfcam_fast.cluster as cluster
from cfcam_fast.cams.capture import capture
from cfcam_fast.core.backends import torch_backend
from cfcam_fast.core.cluster import certified
from cfcam_fast.plan import resolve_plan

DBSCAN_BACKENDS = [b for b in ("torch", "native", "sklearn") if cluster.unavailable_reason(b) is None]


def assert_matches_reference(A, G, config, output_size=(64, 64)):
    ref = cf.cfcam_explain(A, G, output_size, config, backend="reference", return_filtered=True)
    got = cf.cfcam_explain(A, G, output_size, config, backend="torch", return_filtered=True)
    assert torch.equal(got.labels, ref.labels)
    assert torch.equal(got.eps.isnan(), ref.eps.isnan())
    torch.testing.assert_close(got.eps, ref.eps, rtol=1e-12, atol=0, equal_nan=True)
    scale = ref.channel_weights.abs().amax().clamp(min=1e-30)
    assert ((got.channel_weights - ref.channel_weights).abs().amax() / scale) < 1e-6
    torch.testing.assert_close(got.weights, ref.weights, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-5)
    for f_got, f_ref in zip(got.filtered, ref.filtered):
        # float32 means over up to 2048 members, with cancellation: 1e-5 of the largest value.
        torch.testing.assert_close(f_got, f_ref, rtol=0, atol=1e-5 * float(f_ref.abs().amax()) + 1e-30)
    return ref


@pytest.mark.parametrize("shape", [(2, 512, 7, 7), (2, 2048, 7, 7), (2, 256, 14, 14), (1, 128, 28, 28)],
                         ids=["resnet18-last", "resnet50-last", "14x14", "28x28"])
@pytest.mark.parametrize("filter", ["gaussian", "official"])
def test_random_realistic_shapes(shape, filter):
    A = structured(*shape, seed=sum(shape))
    G = torch.randn(shape) * 1e-3
    ref = assert_matches_reference(A, G, cf.CFCAMConfig(filter=filter))
    assert int(ref.labels.amax()) >= 1, "the data should give several clusters"


@pytest.mark.parametrize("weighting", ["softmax", "standardized", "linear"])
@pytest.mark.parametrize("dbscan_backend", DBSCAN_BACKENDS)
def test_weightings_and_dbscan_backends(weighting, dbscan_backend):
    A = structured(3, 96, 6, 5, seed=3)
    G = torch.randn(3, 96, 6, 5)
    assert_matches_reference(A, G, cf.CFCAMConfig(weighting=weighting, dbscan_backend=dbscan_backend,
                                                  sigma=0.7, truncate=3.0))


def test_edge_cases_match_reference():
    # Fewer than 2 remaining channels: no DBSCAN, eps is NaN, the rest is noise.
    A = torch.rand(2, 3, 4, 4)
    assert_matches_reference(A, torch.randn(2, 3, 4, 4), cf.CFCAMConfig())
    # All distances zero: eps is the floor and identical channels form one cluster.
    A = torch.zeros(1, 16, 3, 3)
    A[0, :4] = torch.rand(4, 3, 3) + 1
    ref = assert_matches_reference(A, torch.randn(1, 16, 3, 3), cf.CFCAMConfig())
    assert ref.eps.item() == pytest.approx(1e-5)
    # Standardised weighting with all weights equal: uniform alpha.
    G = torch.ones(1, 16, 3, 3)
    assert_matches_reference(A, G, cf.CFCAMConfig(weighting="standardized"))


def test_memory_budget_chunks_give_the_same_result():
    A = structured(5, 64, 4, 4, seed=5)
    G = torch.randn(5, 64, 4, 4)
    whole = cf.cfcam_explain(A, G, None, cf.CFCAMConfig(), backend="torch")
    tiny_budget = cf.CFCAMConfig(memory_budget_bytes=1)  # one image per chunk
    chunked = cf.cfcam_explain(A, G, None, tiny_budget, backend="torch")
    assert torch.equal(whole.labels, chunked.labels)
    assert torch.equal(whole.maps, chunked.maps)


def test_memory_budget_is_the_configs_or_sized_per_device(monkeypatch):
    from cfcam_fast.core.backends.torch_backend import CPU_BUDGET, memory_budget

    assert cf.CFCAMConfig().memory_budget_bytes is None
    assert memory_budget(cf.CFCAMConfig(memory_budget_bytes=12345), torch.device("cuda")) == 12345
    assert memory_budget(cf.CFCAMConfig(), torch.device("cpu")) == CPU_BUDGET
    # On CUDA: a quarter of free device memory plus the allocator's cached, unused blocks.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (100 << 30, 141 << 30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 30 << 30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 10 << 30)
    assert memory_budget(cf.CFCAMConfig(), torch.device("cuda")) == 30 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1 << 30, 141 << 30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 10 << 30)
    assert memory_budget(cf.CFCAMConfig(), torch.device("cuda")) == CPU_BUDGET  # never below the CPU's


def test_half_precision_input():
    A = structured(2, 64, 5, 5, seed=9)
    G = torch.randn(2, 64, 5, 5) * 1e-2
    got = cf.cfcam_explain(A.half(), G.half(), (20, 20), backend="torch")
    ref = cf.cfcam_explain(A.half().float(), G.half().float(), (20, 20), backend="reference")
    assert got.maps.dtype == torch.float32
    assert torch.equal(got.labels, ref.labels)
    torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-5)


def photo_batch() -> torch.Tensor:
    from cfcam_fast.data.images import preprocess
    from cfcam_fast.data.photos import bundled_photos

    return preprocess([image for _, image in bundled_photos()[:4]])


@pytest.mark.parametrize("filter", ["gaussian", "official"])
def test_real_photos_efficientnet_lite0(filter):
    model, layer = efficientnet_lite0()
    got = capture(model, photo_batch(), [model.get_submodule(layer)])
    A, G = got.activations[0], got.gradients[0]
    assert_matches_reference(A, G, cf.CFCAMConfig(filter=filter), output_size=(224, 224))


def test_real_photos_resnet50():
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    got = capture(model, photo_batch()[:2], [model.layer4[-1]])
    A, G = got.activations[0], got.gradients[0]
    for filter in ("gaussian", "official"):
        assert_matches_reference(A, G, cf.CFCAMConfig(filter=filter), output_size=(224, 224))


# -------------------------------------------------------------------------------------- extreme scales
SCALINGS = {
    "activations x1e-41 (subnormal)": lambda A, G: (A * 1e-41, G),
    "activations x2^-140 (subnormal)": lambda A, G: (A * 2.0 ** -140, G),
    "gradients x1e-41 (subnormal)": lambda A, G: (A, G * 1e-41),
    "both subnormal": lambda A, G: (A * 1e-40, G * 1e-40),
    "activations x1e37 (near float32's max)": lambda A, G: (A * 1e37, G),
    "gradients x1e38 (near float32's max)": lambda A, G: (A, G * 1e38),
    "float64 x1e30 / x1e-30": lambda A, G: (A.double() * 1e30, G.double() * 1e-30),
    "one image subnormal": lambda A, G: (A * torch.tensor([1.0, 1e-42, 1.0])[:, None, None, None], G),
}


@pytest.mark.parametrize("scaling", list(SCALINGS))
@pytest.mark.parametrize("weighting", ["softmax", "standardized", "linear"])
@pytest.mark.parametrize("filter_name", ["gaussian", "official"])
def test_extreme_scales_match_the_reference(scaling, weighting, filter_name):
    A, G = SCALINGS[scaling](*captured_pair())
    config = cf.CFCAMConfig(weighting=weighting, filter=filter_name)
    ref = cf.cfcam_explain(A, G, (12, 12), config, backend="reference")
    got = cf.cfcam_explain(A, G, (12, 12), config, backend="torch")
    assert torch.equal(got.labels, ref.labels)
    torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.eps, ref.eps, rtol=1e-12, atol=0, equal_nan=True)
    # Weights relative to each image's largest (float32 rounding; subnormal ones are
    # rounded to float32's subnormal grid by both).
    for field in ("channel_weights", "weights"):
        g, r = getattr(got, field).double(), getattr(ref, field).double()
        peak = r.abs().amax(1, keepdim=True).clamp_min(1e-300)
        assert float(((g - r).abs() / peak).max()) < 1e-5, field


# ------------------------------------------------------- the static-shape path (RealtimeCFCAM's frame)
def test_max_remaining_bounds_the_channels_below_the_split():
    gen = torch.Generator().manual_seed(0)
    for C in (1, 2, 3, 7, 48, 512):
        norms = torch.rand(200, C, generator=gen, dtype=torch.float64)
        norms[:100, : C // 2] = 0.25  # ties at the split
        flat = norms[:, :, None]
        below = (~torch_backend.importance_split(flat, 75.0)).sum(1)
        assert int(below.max()) <= torch_backend.max_remaining(C, 75.0)


def test_subnormal_activations_on_the_static_path():
    """The real-time path (shapes fixed, no host synchronisation) scales alike."""
    A, G = captured_pair()
    A = A * 1e-41
    config = cf.CFCAMConfig(weighting="linear")
    n = torch_backend.max_remaining(A.shape[1], config.importance_percentile)
    plan = resolve_plan("torch", config, A.device)
    fixed = torch_backend.FixedShapes(n, torch.empty(3, n, n, dtype=plan.distance_dtype))
    got = torch_backend.explain(A, G, (12, 12), config, plan, fixed=fixed)
    ref = cf.cfcam_explain(A, G, (12, 12), config, backend="reference")
    assert torch.equal(got.labels, ref.labels)
    torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-5)


@needs_native
def test_the_static_core_compiles_with_fullgraph():
    """The CPU proof that a frame's CF-CAM has no host synchronisation and no
    data-dependent shape: ``torch.compile(fullgraph=True)`` traces it whole."""
    torch.manual_seed(0)
    A = torch.randn(2, 256, 7, 7).relu()  # 192 points: more than one panel of the CPU product
    A[:, :30] = 0
    G = torch.randn(2, 256, 7, 7) * 1e-3
    config = cf.CFCAMConfig()
    n = torch_backend.max_remaining(256, config.importance_percentile)
    assert n > certified.PANEL_ROWS
    plan = resolve_plan("torch", config, A.device)
    fixed = torch_backend.FixedShapes(n, torch.empty(2, n, n, dtype=plan.distance_dtype))

    def core(A, G):
        result = torch_backend.explain(A, G, (32, 32), config, plan, fixed=fixed)
        return result.maps, result.labels

    maps, labels = torch.compile(core, backend="aot_eager", fullgraph=True)(A, G)
    ref = cf.cfcam_explain(A, G, (32, 32), config, backend="torch")
    assert torch.equal(labels, ref.labels)
    torch.testing.assert_close(maps, ref.maps, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ CUDA
@pytest.mark.gpu
@pytest.mark.parametrize("dbscan_backend", ["torch", "native"])
def test_cuda_matches_reference(dbscan_backend):
    if cluster.unavailable_reason(dbscan_backend, torch.device("cuda")) is not None:
        pytest.skip(cluster.unavailable_reason(dbscan_backend, torch.device("cuda")))
    A = structured(4, 2048, 7, 7, seed=2)
    G = torch.randn(4, 2048, 7, 7) * 1e-3
    for filter in ("gaussian", "official"):
        config = cf.CFCAMConfig(filter=filter, dbscan_backend=dbscan_backend)
        ref = cf.cfcam_explain(A, G, (224, 224), config, backend="reference")
        got = cf.cfcam_explain(A.cuda(), G.cuda(), (224, 224), config, backend="torch")
        assert got.maps.device.type == "cuda"
        assert torch.equal(got.labels.cpu(), ref.labels)
        np.testing.assert_allclose(got.maps.cpu().numpy(), ref.maps.numpy(), rtol=0, atol=1e-5)
