"""The plan of a call: its names and consistency (``Plan``, ``core.plan``), how a backend
and a DBSCAN backend resolve to one on a device (``core.resolve``), and what
``cf.backend_status()`` says can run here. Both are public as ``cfcam_fast.plan``; the plan a
call records (``result.plan``) is tested with each call (``core.explain``, the CAMs)."""
from __future__ import annotations

import re

import pytest
import torch
from helpers import CPU, needs_native, plan_of, structured

import cfcam_fast as cf
from cfcam_fast import cluster
from cfcam_fast.core import native
from cfcam_fast.plan import Plan, all_keys, resolve_plan, unavailable_reason


@pytest.fixture
def no_native_cpu(monkeypatch):
    """As if the CPU module had not been built."""
    monkeypatch.setattr(native, "_cpu", None)
    monkeypatch.setattr(native, "_cpu_error", ModuleNotFoundError("No module named 'cfcam_fast._native_cpu'"))


# ------------------------------------------------------------------------------------------ resolution
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


# ---------------------------------------------------------------------------------------------- naming
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


# ------------------------------------------------------------------------------------------------ CUDA
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
