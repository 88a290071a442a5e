"""``.pt2`` frames (AOTInductor packages) loaded by ``torch._inductor.aoti_load_package`` in a
fresh interpreter that imports torch but neither this package nor the model's code
(``cams.export.isolated``; the runner fails otherwise), compared as the ONNX frames are
(test_export_onnx.py). Every test compiles C++ (20 to 60 s on a 2-core CPU): all are slow."""
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
from cfcam_fast.cams.export.isolated import run_isolated

pytestmark = [needs_native, pytest.mark.slow]


def test_probe_frames(tmp_path_factory):
    """Every branch of the core on the very activations the reference sees: eps bit for bit."""
    config = cf.CFCAMConfig(filter="official", weighting="standardized")
    rt = probe_realtime(config, targets=[2, 4])
    info = exported(tmp_path_factory, ("probe",), rt, ".pt2", extra_outputs=EXTRAS)
    inputs = [probe_batch(kinds, seed=3 * i) for i, kinds in enumerate(FRAMES)]
    run = run_isolated(info.path, inputs)
    assert run["metadata"] == info.metadata and json.loads(run["metadata"]["cfcam.targets"]) == [2, 4]
    assert run["outputs"]["class_idx"].eq(torch.tensor([2, 4])).all()
    check_probe_frames(rt, inputs, run)


CASES = {  # other configs than the ONNX tests, so that both formats cover more of them
    "resnet18": (cf.CFCAMConfig(filter="official", weighting="linear"), [281]),
    "mobilenet_v2": (cf.CFCAMConfig(), None),
    "efficientnet_lite0": (cf.CFCAMConfig(weighting="standardized"), None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_real_model_frames(name, tmp_path_factory):
    check_real_model(tmp_path_factory, name, ".pt2", *CASES[name], seed=71)


def test_real_model_gradcam_frame(tmp_path_factory):
    check_real_gradcam(tmp_path_factory, "mobilenet_v2", ".pt2", seed=81)
