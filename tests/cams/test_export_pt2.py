"""``.pt2`` frames (AOTInductor packages) loaded by ``torch._inductor.aoti_load_package`` in a
fresh interpreter that imports torch but neither this package nor the model's code
(``cams.export.isolated``; the runner fails otherwise), compared as the ONNX frames are
(test_export_onnx.py). Every test that compiles one is slow (C++: 20 to 60 s on a 2-core
CPU); the GPU test compiles Triton kernels for CUDA."""
from __future__ import annotations

import json

import pytest
import torch
from export_helpers import (
    EXTRAS,
    FRAMES,
    check_probe_frames,
    check_real_gradcam,
    check_real_model,
    exported,
    probe_batch,
    probe_realtime,
)
from helpers import needs_native

import cfcam_fast as cf
from cfcam_fast.cams.export import aoti
from cfcam_fast.cams.export.isolated import run_isolated

pytestmark = needs_native


def assert_no_fp_fusion_on_cuda() -> None:
    """``aoti.inductor_flags("cuda")`` makes Inductor compile its Triton kernels without
    floating-point contraction (``enable_fp_fusion`` off)."""
    from torch._inductor import config
    from torch._inductor.codegen.triton import TritonKernel

    assert TritonKernel.triton_meta_common()["enable_fp_fusion"] is not config.emulate_precision_casts
    with config.patch(aoti.inductor_flags("cuda")):
        assert TritonKernel.triton_meta_common()["enable_fp_fusion"] is False


def test_cuda_packages_pin_no_contraction_and_cpu_ones_are_unchanged():
    assert aoti.inductor_flags("cpu") == aoti.INDUCTOR_FLAGS
    assert aoti.inductor_flags("cuda") == {**aoti.INDUCTOR_FLAGS, "emulate_precision_casts": True}
    assert_no_fp_fusion_on_cuda()


@pytest.mark.slow
def test_probe_frames(tmp_path_factory):
    """Every branch of the core on the very activations the reference sees: eps bit for bit."""
    config = cf.CFCAMConfig(filter="official", weighting="standardized")
    rt = probe_realtime(config, targets=[2, 4])
    info = exported(tmp_path_factory, ("probe",), rt, ".pt2", extra_outputs=EXTRAS)
    inputs = [probe_batch(kinds, seed=3 * i) for i, kinds in enumerate(FRAMES)]
    run = run_isolated(info.path, inputs)
    assert run["metadata"] == info.metadata and json.loads(run["metadata"]["cfcam.targets"]) == [2, 4]
    assert info.metadata["cfcam.device"] == "cpu"
    assert run["outputs"]["class_idx"].eq(torch.tensor([2, 4])).all()
    check_probe_frames(rt, inputs, run)


@pytest.mark.gpu
@pytest.mark.slow
def test_probe_frames_on_cuda(tmp_path):
    """A RealtimeCFCAM on CUDA exports a CUDA package, run on CUDA in a fresh interpreter:
    classes and labels as RealtimeCFCAM's on CUDA, maps within tolerance, eps within
    EPS_RTOL of its (a float64 product decides there) and bit for bit the reference's on
    the same activations; no contraction in the Triton kernels."""
    rt = probe_realtime(cf.CFCAMConfig(filter="official", weighting="standardized"), targets=[2, 4], device="cuda")
    info = rt.export(tmp_path / "frame.pt2", extra_outputs=EXTRAS)
    inputs = [probe_batch(kinds, seed=3 * i) for i, kinds in enumerate(FRAMES)]
    run = run_isolated(info.path, inputs)
    assert run["metadata"] == info.metadata and info.metadata["cfcam.device"] == "cuda"
    check_probe_frames(rt, inputs, run, rt_eps_exact=False)
    assert_no_fp_fusion_on_cuda()


CASES = {  # other configs than the ONNX tests, so that both formats cover more of them
    "resnet18": (cf.CFCAMConfig(filter="official", weighting="linear"), [281]),
    "mobilenet_v2": (cf.CFCAMConfig(), None),
    "efficientnet_lite0": (cf.CFCAMConfig(weighting="standardized"), None),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_real_model_frames(name, tmp_path_factory):
    check_real_model(tmp_path_factory, name, ".pt2", *CASES[name], seed=71)


@pytest.mark.slow
def test_real_model_gradcam_frame(tmp_path_factory):
    check_real_gradcam(tmp_path_factory, "mobilenet_v2", ".pt2", seed=81)
