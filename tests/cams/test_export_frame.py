"""``RealtimeCFCAM.export`` and the frame it traces (``cams.export.frame``), before any
runtime: the eager frame equals ``RealtimeCFCAM`` bit for bit, the Grad-CAM frame equals
``cf.GradCAM``, the traced program is pure ATen with float64 constants kept, and every
refusal says why and leaves the model as it was. (The artefacts themselves:
test_export_onnx.py and test_export_pt2.py.)"""
from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
from export_helpers import CONFIGS, Probe, nan_safe_equal, probe_batch, probe_realtime
from helpers import assert_state_unchanged, hooks_left, model_state, needs_native, tiny_cnn, torchvision_model
from torch import nn

import cfcam_fast as cf
from cfcam_fast.cams import export as export_module
from cfcam_fast.cams.export import EXTRA_OUTPUTS, Frame, format_of, non_aten_ops, trace
from cfcam_fast.cams.head import LinearHead
from cfcam_fast.cams.model_state import eval_mode

pytestmark = needs_native


def frame_of(rt: cf.RealtimeCFCAM, **kwargs) -> Frame:
    return Frame(rt.model, rt.layer, rt._head, rt.shape, rt.config, rt._targets, method=rt.method,
                 head_proof=rt.mode_reason, **kwargs)


def run_frame(frame: Frame, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad(), eval_mode(frame.model):
        return dict(zip(frame.output_names, frame(x)))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.filter}-{c.weighting}")
@pytest.mark.parametrize("targets", [None, [3, 1]], ids=["top", "fixed"])
def test_eager_frame_equals_realtime(config, targets):
    rt = probe_realtime(config, targets)
    frame = frame_of(rt, extra_outputs=("labels", "eps"))
    for kinds in (["random", "dead"], ["tie", "huge"], ["chain", "tiny"]):
        x = probe_batch(kinds, seed=len(kinds[0]))
        out, ref = run_frame(frame, x), rt.explain(x)
        assert torch.equal(out["class_idx"], ref.class_idx) and torch.equal(out["labels"], ref.labels)
        assert nan_safe_equal(out["eps"], ref.eps) and torch.equal(out["maps"], ref.maps)
        assert torch.equal(out["logits"], ref.logits)
        if targets is not None:
            assert out["class_idx"].tolist() == targets


def test_eager_frame_on_a_cnn():
    model = tiny_cnn()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    rt = cf.RealtimeCFCAM(model, model.features, x, cf.CFCAMConfig(filter="official"))
    out, ref = run_frame(frame_of(rt, extra_outputs=("labels", "activations", "gradients")), x), rt.explain(x)
    assert torch.equal(out["labels"], ref.labels) and torch.equal(out["maps"], ref.maps)
    assert out["gradients"].shape == out["activations"].shape == (2, 12, 8, 8)


def test_gradcam_frame_equals_grad_cam():
    rt = probe_realtime(method="gradcam")
    x = probe_batch(["random", "relu"])
    ref = cf.GradCAM(rt.model, [rt.layer]).explain(x)
    python = rt.explain(x)
    assert torch.equal(python.class_idx, ref.class_idx) and python.plan is None
    assert (python.labels == -2).all() and torch.isnan(python.eps).all()
    torch.testing.assert_close(python.maps, ref.maps, rtol=0, atol=1e-6)
    out = run_frame(frame_of(rt), x)
    assert torch.equal(out["class_idx"], ref.class_idx)
    torch.testing.assert_close(out["maps"], ref.maps, rtol=0, atol=2e-6)


def test_gradcam_needs_no_compiled_ops(monkeypatch):
    monkeypatch.setattr(cf.cluster, "unavailable_reason", lambda *a: "not built")
    model = Probe().eval()
    rt = cf.RealtimeCFCAM(model, model.act, probe_batch(["random"]), method="gradcam")
    assert rt(probe_batch(["relu"])).shape == (1, 3, 3)
    with pytest.raises(ValueError, match="method must be one of"):
        cf.RealtimeCFCAM(model, model.act, probe_batch(["random"]), method="scorecam")


def test_traced_program_is_aten_with_loops_and_exact_constants():
    rt = probe_realtime(cf.CFCAMConfig(eps_percentile=33.3, min_samples_fraction=0.07))
    program = trace(frame_of(rt), probe_batch(["random", "random"]))
    assert non_aten_ops(program) == []
    names = {str(n.target) for m in program.graph_module.modules() if hasattr(m, "graph")
             for n in m.graph.nodes if n.op == "call_function"}
    assert any("while_loop" in t for t in names) and any("cond" in t for t in names)


def test_a_frame_traces_on_its_models_device():
    """The core's tables follow the model and its head, so the frame traces on their device
    (CUDA for a CUDA package; here the meta device, which needs no GPU) with every output
    there."""
    model = Probe().eval().to("meta")
    head = LinearHead(model.fc.weight.detach(), model.fc.bias.detach(), "fc")
    frame = Frame(model, model.act, head, (2, 48, 3, 3), cf.CFCAMConfig(), extra_outputs=EXTRA_OUTPUTS)
    assert {b.device.type for b in frame.buffers()} == {"meta"}
    program = trace(frame, torch.zeros(2, 48, 3, 3, device="meta"))
    outputs = program.graph.find_nodes(op="output")[0].args[0]
    assert len(outputs) == len(frame.output_names) and {o.meta["val"].device.type for o in outputs} == {"meta"}


def test_metadata_carries_every_config_field_and_the_targets():
    config = cf.CFCAMConfig(filter="official", weighting="linear", sigma=1.5)
    meta = frame_of(probe_realtime(config, [2, 4]), extra_outputs=("labels",)).metadata()
    import json
    from dataclasses import asdict

    assert json.loads(meta["cfcam.config"]) == asdict(config)
    assert meta["cfcam.filter"] == "official" and meta["cfcam.weighting"] == "linear"
    assert json.loads(meta["cfcam.targets"]) == [2, 4] and meta["cfcam.method"] == "cfcam"
    assert json.loads(meta["cfcam.input_shape"]) == [2, 48, 3, 3] and meta["cfcam.layer"] == "act"
    assert meta["cfcam.head"] == "fc" and "proven against autograd" in meta["cfcam.head_proof"]
    assert json.loads(meta["cfcam.outputs"]) == ["logits", "class_idx", "maps", "labels"]
    assert meta["cfcam.pairwise_points"] == "36" and all(k.startswith("cfcam.") for k in meta)
    assert json.loads(frame_of(probe_realtime()).metadata()["cfcam.targets"]) is None


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", ["frame.txt", "frame", "frame.onnx.zip"])
def test_other_suffixes_are_refused(name, tmp_path):
    with pytest.raises(ValueError, match=r"supported ones are \.onnx .* and \.pt2"):
        probe_realtime().export(tmp_path / name)
    assert format_of("A.ONNX") == "onnx" and format_of("b.pt2") == "pt2"


def test_mobilenet_v3_is_refused_naming_the_head():
    model = torchvision_model("mobilenet_v3_small")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rt = cf.RealtimeCFCAM(model, model.features, torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError) as info:
        rt.export("mnv3.onnx")
    message = str(info.value)
    assert "'features'" in message and "'classifier.3'" in message and "576 channels" in message
    assert "not proven to be global average pooling + linear" in message


def test_backward_mode_is_refused():
    model = Probe().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rt = cf.RealtimeCFCAM(model, model.act, probe_batch(["random"]), head=None)
    with pytest.raises(ValueError, match="head=None: the backward pass runs for every frame"):
        rt.export("probe.pt2")


def test_without_the_onnx_extra_export_says_what_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ImportError, match=r'pip install "cfcam-fast\[onnx\]" \(missing: onnxscript\)') as info:
        probe_realtime().export(tmp_path / "probe.onnx")
    assert isinstance(info.value, ValueError)  # the command line reports it in one line


def test_a_missing_folder_and_bad_extra_outputs_are_refused(tmp_path):
    rt = probe_realtime()
    with pytest.raises(ValueError, match="does not exist"):
        rt.export(tmp_path / "no" / "probe.onnx")
    with pytest.raises(ValueError, match="extra_outputs must be distinct names among"):
        rt.export(tmp_path / "probe.onnx", extra_outputs=("labels", "weights"))
    assert set(EXTRA_OUTPUTS) == {"labels", "eps", "activations", "gradients", "certified"}


class NormProbe(Probe):
    """A ``Probe`` with a BatchNorm before its target layer; ``branchy`` reads a value on the
    host in its forward, which eager PyTorch runs but ``torch.export`` cannot trace."""

    def __init__(self, branchy: bool) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(48)
        self.branchy = branchy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branchy and float(x.abs().max()) < 0:  # never true: a data-dependent branch
            x = -x
        return super().forward(self.norm(x))


@pytest.mark.parametrize("stage", ["trace", "write"])
def test_a_failed_export_leaves_the_model_as_it_was(stage, monkeypatch, tmp_path):
    """In training mode, with BatchNorm statistics: tracing fails, or the writer after it."""
    model = NormProbe(branchy=stage == "trace").train()
    rt = cf.RealtimeCFCAM(model, model.act, probe_batch(["random", "relu"]))
    before = model_state(model)
    if stage == "write":
        def fail(*args, **kwargs):
            raise RuntimeError("disk full")

        monkeypatch.setattr(export_module.onnx, "write", fail)
    with pytest.raises(Exception, match="disk full" if stage == "write" else None):
        rt.export(tmp_path / "frame.onnx")
    assert hooks_left(model) == {}
    assert_state_unchanged(model, before)
    assert model.training and model.norm.training
    assert not (tmp_path / "frame.onnx").exists()
