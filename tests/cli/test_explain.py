"""``cfcam-fast explain`` on images (``cli.explain``), run in-process: real photos with the real
model, reruns, folders, unreadable and broken files in every common format (made here with
Pillow), unknown layers, a vision transformer, and weight files that do not fit."""
import csv
import json

import pytest
import torch
from helpers import BROKEN_IMAGES, GOOD_IMAGES, cat_photo, results, write_awkward_images
from PIL import Image
from skimage import data

import cfcam_fast as cf
from cfcam_fast.cams.capture import capture
from cfcam_fast.cli import main
from cfcam_fast.data.layers import reshape_transform
from cfcam_fast.data.models import imagenet_classes, load_model

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
# The reference backend runs anywhere; the default "auto" is covered by the backend tests.
BACKEND = ["--backend", "reference"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.chelsea()).save(folder / "a_cat.png")
    Image.fromarray(data.coffee()).save(folder / "b_coffee.jpg")
    return folder


def test_explain_two_photos(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain", str(photos / "b_coffee.jpg"), str(photos / "a_cat.png"), *BACKEND,
                 "--batch-size", "1", "--out", str(out)])
    assert code == 0
    records = results(out)
    assert [r["file"] for r in records] == [str(photos / "a_cat.png"), str(photos / "b_coffee.jpg")]  # sorted
    classes = imagenet_classes()
    for batch, record in enumerate(records):
        assert set(record) == {"file", "overlay", "class", "class_name", "confidence", "timing"}
        assert record["class_name"] == classes[record["class"]]
        assert 0.0 < record["confidence"] <= 1.0 and record["timing"]["batch_milliseconds"] > 0.0
        assert (record["timing"]["batch"], record["timing"]["batch_size"]) == (batch, 1)
        with Image.open(out / record["overlay"]) as png:
            assert png.format == "PNG"
    assert records[0]["class"] in CAT_CLASSES
    assert sorted(p.name for p in out.iterdir()) == ["a_cat_cfcam.png", "b_coffee_cfcam.png", "config.json",
                                                     "results.jsonl", "run.json", "summary.csv", "summary.json"]
    entries = json.loads((out / "summary.json").read_text())
    assert [(e["file"], e["name"], e["batch"]) for e in entries] == [(r["file"], r["class_name"], r["timing"]["batch"])
                                                                     for r in records]
    run = json.loads((out / "run.json").read_text())
    assert (run["images"], run["explained"], run["failed"], run["world_size"]) == (2, 2, 0, 1)
    assert run["plan"].startswith("core:") and " dbscan:" in run["plan"]  # what computed the maps
    assert 0.0 < run["this_run"]["first_batch_seconds"] <= run["this_run"]["seconds"]
    with (out / "summary.csv").open() as rows:
        assert next(rows).startswith("file,label,overlay,map,class,name,confidence,batch,")
    printed = capsys.readouterr().out
    assert "explain: 2 done, 0 skipped as already done, 0 failed" in printed


def test_a_rerun_skips_what_is_done_and_other_options_are_refused(photos, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["explain", str(photos), *BACKEND, "--no-overlays", "--save-maps", "--workers", "0", "--out", str(out)]
    assert main(args) == 0
    first = results(out)
    assert [r["map"] for r in first] == ["maps/a_cat.npy", "maps/b_coffee.npy"]
    capsys.readouterr()
    assert main(args) == 0
    assert "explain: 0 done, 2 skipped as already done, 0 failed" in capsys.readouterr().out
    assert results(out) == first
    assert main([*args, "--weighting", "linear"]) == 1
    assert "holds results made with other options (weighting differ)" in capsys.readouterr().err
    assert main([*args, "--photos", "shipped"]) == 1
    assert "give paths or --photos, not both" in capsys.readouterr().err


def test_folder_input_takes_only_images_in_sorted_order(photos, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image, and not named like one")
    for name in ("z_cat.png", "m_cat.png"):
        (folder / name).write_bytes((photos / "a_cat.png").read_bytes())
    out = tmp_path / "out"
    assert main(["explain", str(folder), *BACKEND, "--out", str(out)]) == 0
    assert [r["overlay"] for r in results(out)] == ["m_cat_cfcam.png", "z_cat_cfcam.png"]


def test_unreadable_image_is_skipped_and_reported_and_the_exit_status_says_so(photos, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_text("this is not a PNG")
    out = tmp_path / "out"
    code = main(["explain", str(bad), str(photos / "a_cat.png"), *BACKEND, "--out", str(out)])
    assert code == 1
    captured = capsys.readouterr()
    assert f"cfcam-fast: skipped {bad}: cannot read image: cannot identify image file" in captured.err
    assert "Traceback" not in captured.err and "1 of 2 files skipped" in captured.out
    records = {r["file"]: r for r in results(out)}
    assert set(records[str(bad)]) == {"file", "error"}
    assert records[str(photos / "a_cat.png")]["overlay"] == "a_cat_cfcam.png"
    assert records[str(photos / "a_cat.png")]["timing"]["batch_size"] == 1
    assert (out / "a_cat_cfcam.png").is_file()


def test_unknown_layer_is_a_one_line_error(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain", str(photos / "a_cat.png"), "--layer", "blocks.99", *BACKEND, "--out", str(out)])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("cfcam-fast: error: unknown layer 'blocks.99'") and "\n" not in err
    assert not out.exists()


def test_a_model_without_pretrained_weights_needs_weights_or_random_weights(photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", str(photos / "a_cat.png"), "--model", "resnet18", *BACKEND, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("cfcam-fast: error: model 'resnet18' has no pretrained weights") and "\n" not in err
    assert "--weights FILE" in err and "--random-weights" in err and not out.exists()
    with pytest.raises(SystemExit):  # argparse: not allowed with each other
        main(["explain", "--model", "resnet18", "--weights", "w.pt", "--random-weights"])
    assert main(["explain", str(photos / "a_cat.png"), "--model", "resnet18", "--random-weights", *BACKEND,
                 "--out", str(out)]) == 0
    assert results(out)[0]["overlay"] == "a_cat_cfcam.png"


# ------------------------------------ broken files, a vision transformer, weight files that do not fit
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six good images, one per awkward format, a truncated JPEG and a text file named .jpg."""
    return write_awkward_images(tmp_path_factory.mktemp("mixed"))


def test_a_folder_with_broken_files_explains_every_good_one_and_reports_the_rest(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", str(folder), *BACKEND, "--batch-size", "4", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    entries = json.loads((out / "summary.json").read_text())
    assert [e["file"] for e in entries] == [str(p) for p in sorted(folder.iterdir())]
    done, failed = entries[:len(GOOD_IMAGES)], entries[len(GOOD_IMAGES):]
    assert [e["overlay"] for e in done] == [f"{name}_cfcam.png" for name in GOOD_IMAGES]
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
    for name in BROKEN_IMAGES:
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
    cat_photo((224, 224)).save(tmp_path / "cat.png")
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
