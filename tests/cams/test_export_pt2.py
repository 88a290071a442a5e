"""``.pt2`` frames (AOTInductor packages) loaded by ``torch._inductor.aoti_load_package`` in a
fresh interpreter that imports torch but neither this package nor the model's code
(``cams.export.isolated``; the runner fails otherwise), compared as the ONNX frames are
(test_export_onnx.py). Every test compiles C++ (20 to 60 s on a 2-core CPU): all are slow."""
from __future__ import annotations

import json

import pytest
import torch
from export_helpers import (
    assert_maps,
    bundled_inputs,
    check_against_realtime,
    check_core,
    check_pair_at_eps,
    exported,
    fresh_inputs,
    probe_batch,
    probe_realtime,
    real_model,
)
from helpers import needs_native

import cfcam_fast as cf
from cfcam_fast.cams.export.isolated import run_isolated

pytestmark = [needs_native, pytest.mark.slow]
EXTRAS = ("labels", "eps", "activations", "gradients", "certified")
FRAMES = [["random", "dead"], ["blobs", "relu"], ["tiny", "huge"], ["tie", "chain"], ["grid", "duplicates"]]


def frame_outputs(run: dict, i: int) -> dict[str, torch.Tensor]:
    return {name: values[i] for name, values in run["outputs"].items()}


def test_probe_frames(tmp_path_factory):
    """Every branch of the core on the very activations the reference sees: eps bit for bit."""
    config = cf.CFCAMConfig(filter="official", weighting="standardized")
    rt = probe_realtime(config, targets=[2, 4])
    info = exported(tmp_path_factory, ("probe",), rt, ".pt2", extra_outputs=EXTRAS)
    inputs = [probe_batch(kinds, seed=3 * i) for i, kinds in enumerate(FRAMES)]
    run = run_isolated(info.path, inputs)
    assert run["metadata"] == info.metadata and json.loads(run["metadata"]["cfcam.targets"]) == [2, 4]
    for i, (kinds, x) in enumerate(zip(FRAMES, inputs)):
        outs = frame_outputs(run, i)
        check_against_realtime(rt, x, outs, eps_exact=True)
        check_core(config, outs, rt.shape[-2:])
        assert bool(outs["certified"]) == (kinds[0] not in ("tie", "grid"))
        assert outs["class_idx"].tolist() == [2, 4]
    assert frame_outputs(run, 0)["eps"][1].item() == 1e-5
    outs = frame_outputs(run, 1)
    check_pair_at_eps(outs["activations"], outs["labels"], outs["eps"])


CASES = {  # other configs than the ONNX tests, so that both formats cover more of them
    "resnet18": (cf.CFCAMConfig(filter="official", weighting="linear"), [281]),
    "mobilenet_v2": (cf.CFCAMConfig(), None),
    "efficientnet_lite0": (cf.CFCAMConfig(weighting="standardized"), None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_real_model_frames(name, tmp_path_factory):
    config, targets = CASES[name]
    model, layer = real_model(name)
    rt = cf.RealtimeCFCAM(model, layer, fresh_inputs(1, seed=1234)[0], config, targets)
    info = exported(tmp_path_factory, (name,), rt, ".pt2", extra_outputs=EXTRAS)
    inputs = fresh_inputs(2, seed=71) + bundled_inputs()
    run = run_isolated(info.path, inputs)
    assert run["metadata"]["cfcam.weighting"] == config.weighting
    for i, x in enumerate(inputs):
        outs = frame_outputs(run, i)
        check_against_realtime(rt, x, outs, eps_exact=False)
        check_core(config, outs, rt.shape[-2:])


def test_real_model_gradcam_frame(tmp_path_factory):
    model, layer = real_model("mobilenet_v2")
    rt = cf.RealtimeCFCAM(model, layer, fresh_inputs(1, seed=1234)[0], method="gradcam")
    info = exported(tmp_path_factory, ("mobilenet_v2", "gradcam"), rt, ".pt2", extra_outputs=("activations",))
    inputs = fresh_inputs(2, seed=81) + bundled_inputs()[:2]
    run = run_isolated(info.path, inputs)
    assert run["metadata"]["cfcam.method"] == "gradcam"
    gradcam = cf.GradCAM(model, [layer])
    for i, x in enumerate(inputs):
        outs = frame_outputs(run, i)
        ref = gradcam.explain(x)
        assert torch.equal(outs["class_idx"], ref.class_idx)
        assert_maps(outs["maps"], ref.maps, outs["activations"], ref.weights)
