"""``.onnx`` frames run by onnxruntime in a fresh interpreter that imports neither torch nor
this package (``cams.export.isolated``; the runner fails otherwise), compared with
``RealtimeCFCAM`` in this process and with the reference on the artefact's own activations.

The probe (its input is the target layer's activations) reaches every branch of the
exported core with the very activations the reference sees, so eps is compared bit for bit:
eps at its floor (dead channels), a pair exactly at eps, a tie at the importance split (the
exact fallback), subnormal and huge scales, ties and duplicates, a non-finite image. The
real models (slow) add the runtime's own convolutions: classes and labels identical, eps
within ``EPS_RTOL``, maps within ``map_tolerance`` (``cfcam_fast.cams.export.tolerance``
says why), and on the artefact's own activations the reference's labels and eps bit for bit."""
from __future__ import annotations

import json
import math

import pytest
import torch
from export_helpers import (
    EXTRAS,
    FRAMES,
    assert_maps,
    check_probe_frames,
    check_real_gradcam,
    check_real_model,
    exported,
    frame_outputs,
    probe_batch,
    probe_realtime,
)
from helpers import needs_native

import cfcam_fast as cf
from cfcam_fast.cams.export.isolated import run_isolated

pytestmark = needs_native


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """The probe's CF-CAM frame exported once, run on every frame of ``FRAMES`` and one with
    a NaN."""
    rt = probe_realtime()
    info = exported(tmp_path_factory, ("probe",), rt, ".onnx", extra_outputs=EXTRAS)
    inputs = [probe_batch(kinds, seed=10 * i) for i, kinds in enumerate(FRAMES)]
    bad = probe_batch(["random", "relu"], seed=77)
    bad[0, 3, 1, 1] = math.nan
    return rt, info, inputs, run_isolated(info.path, inputs + [bad])


def test_probe_frames_equal_realtime_and_the_reference(probe_run):
    rt, _, inputs, run = probe_run
    check_probe_frames(rt, inputs, run)


def test_non_finite_image_gets_a_nan_map(probe_run):
    rt, _, inputs, run = probe_run
    outs = frame_outputs(run, len(inputs))
    assert torch.isnan(outs["maps"][0]).all() and torch.isfinite(outs["maps"][1]).all()
    with pytest.raises(ValueError, match="batch index 0"):
        rt.explain(outs["activations"])  # the CPU path raises; a static graph cannot


def test_probe_artefact_names_and_metadata(probe_run):
    rt, info, _, run = probe_run
    assert run["input_names"] == ["input"]
    assert list(run["outputs"]) == ["logits", "class_idx", "maps", *EXTRAS]
    meta = run["metadata"]
    assert meta == {**info.metadata, "cfcam.opset": "18"}
    assert json.loads(meta["cfcam.config"])["eps_floor"] == 1e-5 and meta["cfcam.targets"] == "null"
    assert run["outputs"]["class_idx"].dtype == torch.int64 and run["outputs"]["maps"].dtype == torch.float32


def test_gradcam_frame_with_fixed_targets(tmp_path_factory):
    rt = probe_realtime(targets=[3, 1], method="gradcam")
    info = exported(tmp_path_factory, ("probe", "gradcam"), rt, ".onnx")
    inputs = [probe_batch(kinds, seed=5 * i) for i, kinds in enumerate(FRAMES[:3])]
    run = run_isolated(info.path, inputs)
    assert list(run["outputs"]) == ["logits", "class_idx", "maps"] and run["metadata"]["cfcam.method"] == "gradcam"
    assert json.loads(run["metadata"]["cfcam.targets"]) == [3, 1]
    gradcam = cf.GradCAM(rt.model, [rt.layer])
    for i, x in enumerate(inputs):
        outs = frame_outputs(run, i)
        ref = gradcam.explain(x, [3, 1])
        assert outs["class_idx"].tolist() == [3, 1]
        assert_maps(outs["maps"], ref.maps, x, ref.weights)
        torch.testing.assert_close(outs["maps"], rt(x), rtol=0, atol=2e-6)


# ----------------------------------------------------------------------------- real models (slow)

CASES = {  # name: (config, targets)
    "resnet18": (cf.CFCAMConfig(), None),
    "mobilenet_v2": (cf.CFCAMConfig(filter="official", weighting="standardized"), [207]),
    "efficientnet_lite0": (cf.CFCAMConfig(filter="official", weighting="linear"), None),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_real_model_frames(name, tmp_path_factory):
    """ResNet-18 and MobileNetV2 random-initialised, EfficientNet-Lite0 with its real weights."""
    check_real_model(tmp_path_factory, name, ".onnx", *CASES[name], seed=21)


@pytest.mark.slow
def test_real_model_gradcam_frame(tmp_path_factory):
    check_real_gradcam(tmp_path_factory, "resnet18", ".onnx", seed=31)
