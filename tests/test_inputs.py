"""Real inputs on the command line: photos in every common format, broken files among them,
a vision transformer, and weight files that do not fit; images made here with Pillow."""
import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import cfcam_fast as cf
from cfcam_fast.cams.capture import capture
from cfcam_fast.cli import main
from cfcam_fast.data.images import ALPHA_BACKGROUND, load_image
from cfcam_fast.data.layers import reshape_transform
from cfcam_fast.data.models import load_model

BACKEND = ["--backend", "reference"]  # runs anywhere
EXIF_ORIENTATION = 0x0112


def _cat(size=(96, 64)) -> Image.Image:
    return Image.fromarray(data.chelsea()).resize(size)


def _jpeg_bytes(image: Image.Image) -> bytes:
    stream = io.BytesIO()
    image.save(stream, "JPEG")
    return stream.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six good images, one per awkward format, a truncated JPEG and a text file named .jpg."""
    path = tmp_path_factory.mktemp("mixed")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # shown rotated 90 degrees clockwise
    _cat().save(path / "a_phone.jpg", exif=exif)
    rgba = _cat().convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.arange(96) < 48, 0, 255).astype(np.uint8)[None].repeat(64, 0)))
    rgba.save(path / "b_rgba.png")  # left half transparent, right half opaque
    Image.fromarray(np.asarray(_cat().convert("L"), np.uint16) * 257).save(path / "c_16bit.png")
    _cat().quantize(64).save(path / "d_palette.png")
    _cat().convert("L").save(path / "e_gray.jpg")
    _cat().convert("CMYK").save(path / "f_cmyk.jpg")
    whole = _jpeg_bytes(_cat())
    (path / "g_truncated.jpg").write_bytes(whole[:len(whole) // 2])
    (path / "h_text.jpg").write_text("this is a text file, not a JPEG")
    return path


GOOD = ["a_phone", "b_rgba", "c_16bit", "d_palette", "e_gray", "f_cmyk"]
BAD = ["g_truncated", "h_text"]


def test_every_format_loads_as_a_viewer_shows_it(folder):
    loaded = {p.stem: load_image(p) for p in folder.iterdir() if p.stem in GOOD}
    assert all(image.mode == "RGB" for image in loaded.values())
    assert loaded["a_phone"].size == (64, 96)  # stored 96 x 64, turned upright by its EXIF tag
    assert {loaded[name].size for name in GOOD[1:]} == {(96, 64)}
    # Orientation 6: the stored top row becomes the right-hand column.
    stored = np.asarray(_cat()).astype(int)
    shown = np.asarray(loaded["a_phone"]).astype(int)
    assert np.abs(shown[:, -1] - stored[0]).mean() < 12 and np.abs(shown[:, 0] - stored[0]).mean() > 20
    # Transparent (left) pixels are on white; opaque (right) ones keep their colour.
    rgba = np.asarray(loaded["b_rgba"]).astype(int)
    assert (rgba[:, 0] == ALPHA_BACKGROUND).all()
    assert np.abs(rgba[:, -1] - stored[:, -1]).max() <= 1
    gray = np.asarray(_cat().convert("L")).astype(int)
    np.testing.assert_allclose(np.asarray(loaded["c_16bit"])[..., 0], gray, atol=1)  # not clipped to white
    assert np.abs(np.asarray(loaded["f_cmyk"]).astype(int) - stored).mean() < 12  # colours kept


def test_a_folder_with_broken_files_explains_every_good_one_and_reports_the_rest(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", str(folder), *BACKEND, "--batch-size", "4", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    entries = json.loads((out / "summary.json").read_text())
    assert [e["file"] for e in entries] == [str(p) for p in sorted(folder.iterdir())]
    done, failed = entries[:len(GOOD)], entries[len(GOOD):]
    assert [e["overlay"] for e in done] == [f"{name}_cfcam.png" for name in GOOD]
    assert [e["batch_size"] for e in done] == [4, 4, 4, 4, 2, 2] and [e["batch"] for e in done] == [0] * 4 + [1] * 2
    assert failed[0]["error"].startswith("cannot read image: image file is truncated")
    assert failed[1]["error"].startswith("cannot read image: cannot identify image file")
    for entry in failed:
        assert set(entry) == {"file", "error"}
        assert f"cfcam-fast: skipped {entry['file']}: {entry['error']}" in captured.err
    assert "Traceback" not in captured.err and "(2 of 8 files skipped)" in captured.out
    with Image.open(out / "a_phone_cfcam.png") as portrait, Image.open(out / "b_rgba_cfcam.png") as landscape:
        assert portrait.width < portrait.height and landscape.width > landscape.height
    with (out / "summary.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [r["file"] for r in rows] == [e["file"] for e in entries]
    assert rows[0]["overlay"] == "a_phone_cfcam.png" and float(rows[0]["batch_milliseconds"]) > 0
    assert rows[0]["error"] == "" and rows[-1]["error"] == entries[-1]["error"] and rows[-1]["class"] == ""


def test_a_folder_of_only_broken_files_is_a_clear_error(folder, tmp_path, capsys):
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    for name in BAD:
        (only_bad / f"{name}.jpg").write_bytes((folder / f"{name}.jpg").read_bytes())
    out = tmp_path / "out"
    assert main(["explain", str(only_bad), *BACKEND, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"cfcam-fast: error: no image could be explained: all 2 failed (reasons above and in "
                       f"{out / 'summary.json'})")
    assert len(json.loads((out / "summary.json").read_text())) == 2


def test_a_vit_is_explained_on_its_patch_grid(tmp_path, capsys):
    model, layer = load_model("vit_tiny_patch16_224", random_weights=True)
    with cf.CFCAM(model, [model.get_submodule(layer)], reshape_transform=reshape_transform(model),
                  backend="reference") as cam:
        x = torch.randn(1, 3, 224, 224)
        captured = capture(model, x, cam.target_layers, None, cam.reshape_transform)
        assert captured.activations[0].shape == (1, 192, 14, 14)
        result = cam.explain(x)
    # One weight per embedding channel (not per head, as when [B, heads, tokens, dim] was read
    # as [B, C, H, W]), and a map that varies across both axes of the patch grid.
    assert result.channel_weights.shape == (1, 192)
    assert result.maps.shape == (1, 224, 224) and torch.isfinite(result.maps).all()
    cells = result.maps[0].reshape(14, 16, 14, 16).mean((1, 3))
    assert cells.std(0).mean() > 0.02 and cells.std(1).mean() > 0.02
    _cat((224, 224)).save(tmp_path / "cat.png")
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "cat.png"), "--model", "vit_tiny_patch16_224", "--random-weights",
                 "--annotate", *BACKEND, "--out", str(out)]) == 0
    assert "layer blocks.11.norm1" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())[0]["overlay"] == "cat_cfcam.png"
    assert main(["explain", str(tmp_path / "cat.png"), "--model", "vit_tiny_patch16_224", "--random-weights",
                 "--reshape", "none", *BACKEND, "--out", str(out)]) == 1
    assert "gives shape (1, 197, 192); CF-CAM needs [B, C, H, W] (a token layout: --reshape vit)" in \
        capsys.readouterr().err
    pytest.importorskip("av")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    assert main(["explain", str(clip), "--model", "vit_tiny_patch16_224", "--random-weights", "--out",
                 str(out)]) == 1
    assert "videos need a target layer with a [B, C, H, W] output" in capsys.readouterr().err


def test_bad_weight_files_are_one_line_naming_the_file_and_the_problem(tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("hello, not weights")  # torch.load alone: KeyError: 104
    other = tmp_path / "resnet18.pt"
    torch.save(load_model("resnet18")[0].state_dict(), other)
    expected = {text: f"weights {text} are not a PyTorch checkpoint (torch.load: KeyError)",
                other: f"weights {other} do not fit MobileNetV3: "}
    for path, message in expected.items():
        assert main(["explain", "--model", "mobilenet_v3_small", "--weights", str(path), *BACKEND,
                     "--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"cfcam-fast: error: {message}") and "\n" not in err
    assert "missing keys (features.0.0.weight, features.0.1.weight, features.0.1.bias, ...); " \
           "122 unexpected keys (conv1.weight, bn1.weight, bn1.bias, ...)" in err
