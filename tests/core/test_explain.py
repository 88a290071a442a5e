"""``cf.cfcam`` and ``cf.cfcam_explain`` (``core.explain``) on captured tensors: the output
size, the plan every call resolves and records in ``result.plan`` (labels equal to the
reference's whatever the plan), and a plan resolved for another device.

Labels are compared exactly (every plan decides on the same float64 values); maps to 1e-6,
a few float32 ulps of values in [0, 1] (the stages after DBSCAN are the same operations in
every torch-core plan; the reference computes them in float64)."""
import pytest
import torch
import torch.nn.functional as F
from helpers import CPU, NATIVE, captured, plan_of, structured

import cfcam_fast as cf
from cfcam_fast.core.explain import run_plan
from cfcam_fast.plan import Plan


def test_cfcam_output_size_default_and_explicit():
    A, G = captured()
    assert cf.cfcam(A, G, backend="reference").shape == (2, 5, 6)
    maps = cf.cfcam(A, G, output_size=(20, 24), backend="reference")
    assert maps.shape == (2, 20, 24) and maps.dtype == torch.float32
    # Explicit size: the default-size map's cam upsampled (docs/algorithm.md step 7), both renormalised.
    res = cf.cfcam_explain(A, G, backend="reference")
    up = F.interpolate(res.maps[:, None].double(), size=(20, 24), mode="bilinear",
                       align_corners=False)[:, 0]
    up = up / up.amax((1, 2), keepdim=True)
    torch.testing.assert_close(maps, up.float(), rtol=0, atol=1e-6)  # float32 rounding
    assert torch.equal(cf.cfcam_explain(A, G, (20, 24), backend="reference").maps, maps)


@pytest.mark.parametrize("dbscan", ["auto", "sklearn", "torch", "native"])
def test_every_backend_records_its_plan_and_gives_the_reference_labels(dbscan):
    if dbscan == "native" and not NATIVE:
        pytest.skip("the compiled DBSCAN ops are not built")
    A = structured(2, 96, 5, 5, seed=3)
    G = torch.randn(A.shape, generator=torch.Generator().manual_seed(4)) * 1e-3
    config = cf.CFCAMConfig(dbscan_backend=dbscan)
    ref = cf.cfcam_explain(A, G, (10, 10), config, backend="reference")
    assert ref.plan == plan_of("reference", dbscan)
    got = cf.cfcam_explain(A, G, (10, 10), config, backend="torch")
    assert got.plan == plan_of("torch", dbscan)
    assert torch.equal(got.labels, ref.labels)
    torch.testing.assert_close(got.maps, ref.maps, rtol=0, atol=1e-6)


def test_triton_records_its_plan():
    if cf.backend_status(CPU)["core:triton"] != "available":
        pytest.skip(cf.backend_status(CPU)["core:triton"])
    A = structured(1, 32, 4, 4, seed=5)
    G = torch.randn(A.shape, generator=torch.Generator().manual_seed(6)) * 1e-3
    got = cf.cfcam_explain(A, G, (8, 8), backend="triton")
    assert got.plan.core == "triton" and got.plan == plan_of("triton")
    assert torch.equal(got.labels, cf.cfcam_explain(A, G, (8, 8), backend="reference").labels)


def test_a_plan_for_another_device_is_refused():
    A, G = structured(1, 16, 4, 4, seed=0), torch.randn(1, 16, 4, 4)
    plan = Plan("torch", "torch", "float64", "torch", "cuda")
    with pytest.raises(ValueError, match="resolved for cuda tensors, got cpu"):
        run_plan(A, G, None, cf.CFCAMConfig(), plan)
