"""The ``cfcam-fast`` command line, run in-process on real photos with the real model."""
import json

import pytest
from PIL import Image
from skimage import data

import cfcam_fast
from cfcam_fast.cli import main
from cfcam_fast.models import imagenet_classes

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
# The reference backend runs anywhere; the default "auto" is covered by the backend tests.
BACKEND = ["--backend", "reference"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.chelsea()).save(folder / "a_cat.png")
    Image.fromarray(data.coffee()).save(folder / "b_coffee.jpg")
    return folder


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def test_explain_two_photos(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain", str(photos / "a_cat.png"), str(photos / "b_coffee.jpg"), *BACKEND,
                 "--batch-size", "1", "--out", str(out)])
    assert code == 0
    entries = _summary(out)
    assert [e["file"] for e in entries] == [str(photos / "a_cat.png"), str(photos / "b_coffee.jpg")]
    classes = imagenet_classes()
    for batch, entry in enumerate(entries):
        assert set(entry) == {"file", "overlay", "class", "name", "confidence", "batch", "batch_size",
                              "batch_milliseconds"}
        assert entry["name"] == classes[entry["class"]]
        assert 0.0 < entry["confidence"] <= 1.0 and entry["batch_milliseconds"] > 0.0
        assert (entry["batch"], entry["batch_size"]) == (batch, 1)
        with Image.open(out / entry["overlay"]) as png:
            assert png.format == "PNG"
    assert entries[0]["class"] in CAT_CLASSES
    assert sorted(p.name for p in out.iterdir()) == ["a_cat_cfcam.png", "b_coffee_cfcam.png", "summary.csv",
                                                     "summary.json"]
    assert "a_cat: " in capsys.readouterr().out


def test_folder_input_takes_only_images_in_sorted_order(photos, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image, and not named like one")
    for name in ("z_cat.png", "m_cat.png"):
        (folder / name).write_bytes((photos / "a_cat.png").read_bytes())
    out = tmp_path / "out"
    assert main(["explain", str(folder), *BACKEND, "--out", str(out)]) == 0
    assert [e["overlay"] for e in _summary(out)] == ["m_cat_cfcam.png", "z_cat_cfcam.png"]


def test_unreadable_image_is_skipped_and_reported_and_the_exit_status_says_so(photos, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_text("this is not a PNG")
    out = tmp_path / "out"
    code = main(["explain", str(bad), str(photos / "a_cat.png"), *BACKEND, "--out", str(out)])
    assert code == 1
    captured = capsys.readouterr()
    assert f"cfcam-fast: skipped {bad}: cannot read image: cannot identify image file" in captured.err
    assert "Traceback" not in captured.err and "1 of 2 files skipped" in captured.out
    entries = _summary(out)
    assert entries[0]["file"] == str(bad) and set(entries[0]) == {"file", "error"}
    assert entries[1]["overlay"] == "a_cat_cfcam.png" and entries[1]["batch_size"] == 1
    assert (out / "a_cat_cfcam.png").is_file()


def test_unknown_layer_is_a_one_line_error(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain", str(photos / "a_cat.png"), "--layer", "blocks.99", *BACKEND, "--out", str(out)])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("cfcam-fast: error: unknown layer 'blocks.99'") and "\n" not in err
    assert not out.exists()


def test_missing_path_and_no_subcommand(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "nope.jpg"), *BACKEND]) != 0
    assert "no such file or folder" in capsys.readouterr().err
    assert main([]) == 2
    assert "explain" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"cfcam-fast {cfcam_fast.__version__}\n"


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
    assert _summary(out)[0]["overlay"] == "a_cat_cfcam.png"
