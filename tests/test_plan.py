"""The plan resolved once per call (``cfcam_fast.plan``), its naming, and ``result.plan``.

Labels are compared exactly (every plan decides on the same float64 values); maps to 1e-6,
a few float32 ulps of values in [0, 1] (the stages after DBSCAN are the same operations in
every torch-core plan; the reference computes them in float64).
"""
from __future__ import annotations

import re

import pytest
import torch
from helpers import images, structured, tiny_cnn

import cfcam_fast as cf
from cfcam_fast import cluster
from cfcam_fast.cams import cfcam as cam_module
from cfcam_fast.core import native
from cfcam_fast.core.explain import run_plan
from cfcam_fast.plan import Plan, all_keys, clustering_plan, resolve_plan, unavailable_reason

CPU = torch.device("cpu")
NATIVE = cluster.unavailable_reason("native", CPU) is None
needs_native = pytest.mark.skipif(not NATIVE, reason="the compiled DBSCAN ops are not built")


def plan_of(backend: str = "auto", dbscan: str = "auto") -> Plan:
    return resolve_plan(backend, cf.CFCAMConfig(dbscan_backend=dbscan), CPU)


@pytest.fixture
def no_native_cpu(monkeypatch):
    """As if the CPU module had not been built."""
    monkeypatch.setattr(native, "_cpu", None)
    monkeypatch.setattr(native, "_cpu_error", ModuleNotFoundError("No module named 'cfcam_fast._native_cpu'"))


# ----------------------------------------------------------------------------- resolution
@needs_native
def test_auto_on_the_cpu_is_torch_with_native_dbscan_on_certified_distances():
    plan = plan_of()
    assert (plan.core, plan.dbscan, plan.distances, plan.eps_selector) == \
        ("torch", "native", "float32-certified", "native")
    assert plan.device == CPU and plan.distance_dtype == torch.float32
    assert plan_of("torch", "native") == plan


@pytest.mark.parametrize("dbscan", ["torch", "sklearn"])
def test_torch_and_sklearn_dbscan_select_eps_in_torch_on_float64(dbscan):
    plan = plan_of("torch", dbscan)
    assert (plan.dbscan, plan.distances, plan.eps_selector) == (dbscan, "float64", "torch")
    assert plan.distance_dtype == torch.float64


@pytest.mark.parametrize("dbscan", ["auto", "sklearn", "torch", "native"])
def test_the_reference_runs_its_own_stages(dbscan):
    assert str(plan_of("reference", dbscan)) == "core:reference dbscan:sklearn distances:pdist eps:numpy on cpu"


@needs_native
def test_reduced_precision_products_keep_native_on_float64_distances():
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        plan = plan_of()
    finally:
        torch.set_float32_matmul_precision(before)
    assert (plan.dbscan, plan.distances, plan.eps_selector) == ("native", "float64", "native")
    assert plan_of().distances == "float32-certified"  # decided per call, from the setting of the time


def test_auto_without_the_native_build_is_torch_everywhere(no_native_cpu):
    plan = plan_of()
    assert str(plan) == "core:torch dbscan:torch distances:float64 eps:torch on cpu"


def test_named_unavailable_backends_say_what_to_install(no_native_cpu):
    reason = re.escape(native.status()["native-cpu"])  # how to build it, or why the build failed
    with pytest.raises(RuntimeError, match=f"DBSCAN backend 'native' is not available: {reason}"):
        plan_of("torch", "native")
    A, G = structured(1, 16, 4, 4, seed=0), torch.randn(1, 16, 4, 4)
    with pytest.raises(RuntimeError, match=reason):
        cf.cfcam_explain(A, G, config=cf.CFCAMConfig(dbscan_backend="native"))
    if cluster.unavailable_reason("cuml", CPU) is not None:
        with pytest.raises(RuntimeError, match="DBSCAN backend 'cuml' is not available: .*(pip install|CUDA)"):
            plan_of("torch", "cuml")


def test_unknown_names_and_inconsistent_plans_are_value_errors():
    with pytest.raises(ValueError, match="unknown backend 'numba'"):
        plan_of("numba")
    with pytest.raises(ValueError, match="unknown backend key 'core:numba'"):
        unavailable_reason("core:numba")
    with pytest.raises(ValueError, match="Plan.dbscan must be one of"):
        Plan("torch", "hdbscan", "float64", "torch", CPU)
    with pytest.raises(ValueError, match="reference core"):
        Plan("torch", "sklearn", "pdist", "numpy", CPU)
    with pytest.raises(ValueError, match="reference core"):
        Plan("reference", "native", "float64", "native", CPU)
    with pytest.raises(ValueError, match="float32-certified needs"):
        Plan("torch", "torch", "float32-certified", "native", CPU)
    with pytest.raises(ValueError, match="float32-certified needs"):
        Plan("torch", "native", "float32-certified", "native", "cuda")


def test_a_plan_for_another_device_is_refused():
    A, G = structured(1, 16, 4, 4, seed=0), torch.randn(1, 16, 4, 4)
    plan = Plan("torch", "torch", "float64", "torch", "cuda")
    with pytest.raises(ValueError, match="resolved for cuda tensors, got cpu"):
        run_plan(A, G, None, cf.CFCAMConfig(), plan)


# ----------------------------------------------------------------------------- naming
def test_every_plan_key_is_a_backend_status_key():
    status = cf.backend_status()
    assert tuple(status) == all_keys()
    assert all(isinstance(reason, str) and reason for reason in status.values())
    for backend in ("reference", "torch"):
        for dbscan in ("auto", "sklearn", "torch"):
            plan = plan_of(backend, dbscan)
            assert str(plan) == " ".join(plan.keys) + " on cpu"
            assert all(status[key] == "available" for key in plan.keys), plan
    for stage in ("core", "dbscan", "distances", "eps"):
        assert any(key.startswith(stage + ":") for key in status)


def test_native_keys_take_their_reason_from_the_native_module(no_native_cpu):
    reason = native.status()["native-cpu"]
    assert reason != "available"
    status = cf.backend_status(CPU)
    assert status["dbscan:native"] == status["eps:native"] == reason
    assert reason in status["distances:float32-certified"]


def test_status_for_a_device():
    status = cf.backend_status("cuda")
    assert status["distances:float32-certified"].startswith("the certified float32 distances are computed on the CPU")
    assert status["dbscan:native"] == native.status()["native-cuda"]


# ----------------------------------------------------------------------------- result.plan
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


def test_cfcam_explain_resolves_one_plan_for_all_its_layers(monkeypatch):
    calls = []

    def counted(*args):
        calls.append(args)
        return resolve_plan(*args)

    monkeypatch.setattr(cam_module, "resolve_plan", counted)
    model = tiny_cnn()
    with cf.CFCAM(model, [model.stem, model.features], config=cf.CFCAMConfig(dbscan_backend="torch")) as cam:
        result = cam.explain(images())
    assert len(calls) == 1
    assert result.plan == plan_of("auto", "torch")


def test_gradcam_results_have_no_plan():
    model = tiny_cnn()
    assert cf.GradCAM(model, [model.features]).explain(images()).plan is None
    assert cf.GradCAMPlusPlus(model, [model.features]).explain(images()).plan is None


@needs_native
def test_realtime_exposes_its_plan():
    model = tiny_cnn()
    x = images(1)
    rt = cf.RealtimeCFCAM(model, model.features, x, config=cf.CFCAMConfig(dbscan_backend="torch"))
    assert rt.plan == clustering_plan("torch", CPU)
    assert rt.explain(x).plan == rt.plan
    assert cf.RealtimeCFCAM(model, model.features, x).plan == plan_of()


@pytest.mark.gpu
def test_auto_on_cuda_and_the_plan_of_a_cuda_call():
    cuda = torch.device("cuda")
    status = cf.backend_status(cuda)
    core = "triton" if status["core:triton"] == "available" else "torch"
    dbscan = "native" if status["dbscan:native"] == "available" else "torch"
    plan = resolve_plan("auto", cf.CFCAMConfig(), cuda)
    assert (plan.core, plan.dbscan, plan.distances, plan.eps_selector) == (core, dbscan, "float64", dbscan)
    A = structured(2, 96, 5, 5, seed=7)
    G = torch.randn(A.shape, generator=torch.Generator().manual_seed(8)) * 1e-3
    got = cf.cfcam_explain(A.cuda(), G.cuda(), (10, 10))
    assert got.plan == resolve_plan("auto", cf.CFCAMConfig(), A.cuda().device)
    assert torch.equal(got.labels.cpu(), cf.cfcam_explain(A, G, (10, 10), backend="reference").labels)
