"""The ``cfcam-fast`` command line, run in-process on real photos with the real model."""
import json

import pytest
from helpers import results
from PIL import Image
from skimage import data

import cfcam_fast
from cfcam_fast.cli import main
from cfcam_fast.data.models import imagenet_classes

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
    assert results(out)[0]["overlay"] == "a_cat_cfcam.png"
