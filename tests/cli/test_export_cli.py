"""``cfcam-fast export`` (``cli.export``), ``cfcam-fast explain --onnx`` (``cli.explain``) and
``--weights`` files in the safetensors format (``data.models``), run in-process.

``explain --onnx`` writes what ``explain`` writes, from the artefact alone; its maps equal
``RealtimeCFCAM``'s on the same preprocessed images within the map tolerance of
``cfcam_fast.cams.export.tolerance`` (the maps are read back from ``--save-maps``)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from export_helpers import assert_maps
from helpers import BROKEN_IMAGES, GOOD_IMAGES, needs_native, results, write_awkward_images
from PIL import Image
from skimage import data
from torch import nn

import cfcam_fast as cf
from cfcam_fast.cams.export.tolerance import layer_activations
from cfcam_fast.cli import main
from cfcam_fast.data.images import preprocess
from cfcam_fast.data.models import load_model

pytestmark = needs_native
SIZE = 32


class TinyClassifier(nn.Module):
    """3 x 32 x 32 images to a 2 x 2 x 16 layer (``act``), global average pooling and 1000
    classes: an ImageNet-shaped model whose frame exports in seconds."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 16, 16)
        self.act = nn.ReLU()
        self.fc = nn.Linear(16, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee", "astronaut"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    model = TinyClassifier().eval()
    rt = cf.RealtimeCFCAM(model, model.act, torch.zeros(2, 3, SIZE, SIZE), cf.CFCAMConfig(weighting="linear"))
    path = tmp_path_factory.mktemp("frame") / "tiny.onnx"
    rt.export(path)
    return rt, path


def _maps_of(out, records) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.load(out / r["map"])) for r in records])


def test_explain_onnx_writes_what_explain_writes(tiny_onnx, photos, tmp_path, capsys):
    """Three photos in batches of the artefact's two (the last one padded)."""
    rt, path = tiny_onnx
    out = tmp_path / "out"
    assert main(["explain", "--onnx", str(path), str(photos), "--save-maps", "--annotate", "--out", str(out)]) == 0
    records = results(out)
    assert [r["file"].rsplit("/", 1)[1] for r in records] == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert [r["timing"]["batch_size"] for r in records] == [2, 2, 1]
    x = preprocess([Image.open(r["file"]).convert("RGB") for r in records], SIZE)
    maps = _maps_of(out, records)
    for rows in ([0, 1], [2]):
        batch = torch.cat([x[rows], torch.zeros(2 - len(rows), 3, SIZE, SIZE)])
        ref = rt.explain(batch)
        assert [records[i]["class"] for i in rows] == ref.class_idx[: len(rows)].tolist()
        assert_maps(maps[rows], ref.maps[: len(rows)], layer_activations(rt.model, rt.layer, batch)[: len(rows)],
                    ref.weights[: len(rows)])
    run = json.loads((out / "run.json").read_text())
    assert run["plan"] == "onnxruntime cfcam frame" and run["metadata"]["cfcam.layer"] == "act"
    assert (run["size"], run["batch_size"], run["explained"]) == (SIZE, 2, 3)
    assert {"astronaut_cfcam.png", "summary.json", "summary.csv", "config.json"} <= {p.name for p in out.iterdir()}
    assert f"ONNX frame {path}" in capsys.readouterr().out


def test_explain_onnx_skips_broken_files_and_explains_the_rest(tiny_onnx, tmp_path, capsys):
    """A truncated JPEG and a text file named .jpg among six awkward good images: every good
    one is explained, each broken one is reported, and the run exits with 1 as ``explain``."""
    _, path = tiny_onnx
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_awkward_images(folder)
    out = tmp_path / "out"
    assert main(["explain", "--onnx", str(path), str(folder), "--out", str(out)]) == 1
    entries = json.loads((out / "summary.json").read_text())
    assert [e["file"] for e in entries] == [str(p) for p in sorted(folder.iterdir())]
    done, failed = entries[:len(GOOD_IMAGES)], entries[len(GOOD_IMAGES):]
    assert [e["overlay"] for e in done] == [f"{name}_cfcam.png" for name in GOOD_IMAGES]
    assert len(failed) == len(BROKEN_IMAGES) and all(set(e) == {"file", "error"} for e in failed)
    err = capsys.readouterr().err
    assert all(f"cfcam-fast: skipped {e['file']}: {e['error']}" in err for e in failed) and "Traceback" not in err

def test_explain_onnx_refusals(tiny_onnx, photos, tmp_path, capsys):
    _, path = tiny_onnx
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    for argv, message in (
            (["--onnx", str(path), "--layer", "conv"], "--onnx brings its own model and layer: drop --layer"),
            (["--onnx", str(path), str(tmp_path / "clip.mp4")], "--onnx explains images"),
            (["--onnx", str(tmp_path / "none.onnx")], "no such file"),
            (["--onnx", str(bad)], f"cannot load the ONNX model {bad}")):
        assert main(["explain", *argv, "--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("cfcam-fast: error: ") and message in err and err.count("\n") == 1, err


def test_export_refusals_are_one_line(tmp_path, capsys):
    for argv, message in (
            (["--out", str(tmp_path / "m.tflite")], "supported ones are .onnx"),
            (["--model", "mobilenet_v3_small", "--random-weights", "--size", "64", "--out", str(tmp_path / "m.onnx")],
             "'classifier.3'"),
            (["--model", "resnet18", "--weights", str(tmp_path / "none.safetensors"), "--out",
              str(tmp_path / "m.pt2")], f"cannot read weights {tmp_path / 'none.safetensors'}"),
            (["--model", "resnet18", "--random-weights", "--size", "64", "--extra-outputs", "labels,alpha",
              "--out", str(tmp_path / "m.onnx")], "extra_outputs must be distinct names")):
        assert main(["export", *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("cfcam-fast: error: ") and message in err and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


def test_weights_read_safetensors(tmp_path):
    from safetensors.torch import save_file

    model = load_model("resnet18", random_weights=True)[0]
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    loaded = load_model("resnet18", str(tmp_path / "w.safetensors"))[0]
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{nonsense")
    with pytest.raises(ValueError, match=r"weights .*bad\.safetensors are not a safetensors file \(safetensors: "):
        load_model("resnet18", str(tmp_path / "bad.safetensors"))
    save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="do not fit ResNet: .*missing keys"):
        load_model("resnet18", str(tmp_path / "other.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_export_command_then_explain(suffix, photos, tmp_path, capsys):
    """ResNet-18 from a .safetensors file at 64 px: the artefact's classes and maps equal
    ``RealtimeCFCAM``'s; the ONNX one then explains the photos with onnxruntime alone."""
    from safetensors.torch import save_file

    from cfcam_fast.cams.export.isolated import run_isolated

    model = load_model("resnet18", random_weights=True)[0]
    save_file(model.state_dict(), str(tmp_path / "r18.safetensors"))
    path = tmp_path / f"r18{suffix}"
    assert main(["export", "--model", "resnet18", "--weights", str(tmp_path / "r18.safetensors"), "--size", "64",
                 "--weighting", "linear", "--extra-outputs", "labels", "--out", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    rt = cf.RealtimeCFCAM(model, model.layer4, torch.zeros(1, 3, 64, 64), cf.CFCAMConfig(weighting="linear"))
    x = preprocess([Image.open(p).convert("RGB") for p in sorted(photos.iterdir())], 64)
    run = run_isolated(path, [image[None] for image in x])
    for i in range(len(x)):
        ref = rt.explain(x[i:i + 1])
        assert torch.equal(run["outputs"]["class_idx"][i], ref.class_idx)
        assert torch.equal(run["outputs"]["labels"][i], ref.labels)
        assert_maps(run["outputs"]["maps"][i], ref.maps, layer_activations(rt.model, rt.layer, x[i:i + 1]), ref.weights)
    if suffix == ".onnx":
        out = tmp_path / "out"
        assert main(["explain", "--onnx", str(path), str(photos), "--save-maps", "--out", str(out)]) == 0
        records = results(out)
        torch.testing.assert_close(_maps_of(out, records), run["outputs"]["maps"][:, 0], rtol=0, atol=0)
