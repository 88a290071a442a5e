"""``cfcam-fast evaluate`` (``cli.evaluate``) in-process: two photos with the real EfficientNet-Lite0, and every
method and metric on a small random ResNet-18."""
import json
import math

import pytest
from helpers import results
from PIL import Image
from skimage import data

from cfcam_fast.cli import main
from cfcam_fast.evaluation.groups import CONFIDENCE_COLUMNS, DELETION_COLUMNS

COLUMNS_8 = CONFIDENCE_COLUMNS + DELETION_COLUMNS  # the confidence and deletion groups

ORIGINAL = [f"CF-CAM {f}/{w}" for f in ("gaussian", "official") for w in ("softmax", "standardized", "linear")] \
    + ["Grad-CAM", "Grad-CAM++"]
# A small random model: layer3 of ResNet-18 has 256 channels (Score-CAM's masked forwards per
# image), 2 x 2 at 32 pixels; few steps, one percentile, one draw: every code path, quickly.
TINY = ["--model", "resnet18", "--random-weights", "--layer", "layer3", "--size", "32", "--steps", "2",
        "--scales", "1", "--draws", "1", "--road-percentiles", "50", "--workers", "0"]
FORWARD_ONLY_OR_OWN_EXPLAIN = {"Eigen-CAM", "Score-CAM", "Smooth Grad-CAM++"}


def _two_photos(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(data.chelsea()).resize((80, 64)).save(folder / "cat.png")
    Image.fromarray(data.coffee()).resize((80, 64)).save(folder / "coffee.png")
    return folder


@pytest.mark.slow
def test_evaluate_two_photos(tmp_path, capsys):
    Image.fromarray(data.chelsea()).save(tmp_path / "cat.png")
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    out = tmp_path / "out"
    # Small images and few steps keep this fast on a CPU; the full defaults are for real runs.
    # The methods and metric groups of the first version of this command.
    code = main(["evaluate", str(tmp_path / "cat.png"), str(tmp_path / "coffee.png"), "--backend", "reference",
                 "--size", "64", "--steps", "2", "--scales", "0.5", "--draws", "1", "--out", str(out),
                 "--methods", ",".join(ORIGINAL), "--metrics", "confidence,deletion,robustness,sensitivity"])
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layer"] == "bn2" and summary["evaluated"] == 2
    assert list(summary["methods"]) == ORIGINAL
    records = results(out)
    assert [r["file"] for r in records] == [str(tmp_path / "cat.png"), str(tmp_path / "coffee.png")]
    keys = [key for key, _, _ in COLUMNS_8] + ["ssim_0.5", "corr_top_bottom", "corr_top_second"]
    for name, entry in summary["methods"].items():
        for key in keys:
            values = [r["metrics"][name][key] for r in records]
            stats = entry["metrics"][key]
            # The mean of two float64 values, recomputed in another order: equal to 1e-12.
            assert stats["n"] == 2 and stats["mean"] == pytest.approx(sum(values) / 2, rel=1e-12, abs=1e-12)
            assert min(values) <= stats["ci95"][0] <= stats["ci95"][1] <= max(values)
        assert all(0.0 <= r["metrics"][name]["average_drop"] <= 100.0 for r in records)
        assert all(-1.0 <= r["metrics"][name]["corr_top_bottom"] <= 1.0 for r in records)
        assert all(r["timing"]["milliseconds_per_image"][name] > 0 for r in records)
        assert f"| {name} |" in printed
    assert (out / "evaluate.md").read_text().strip() in printed
    with Image.open(out / "evaluate.png") as png:
        assert png.size[0] > 600 and png.size[1] > 300


def test_every_method_and_metric_runs_and_not_applicable_is_null(tmp_path, capsys):
    from cfcam_fast.evaluation.methods import METHODS

    out = tmp_path / "out"
    assert main(["evaluate", str(_two_photos(tmp_path)), *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == list(METHODS)
    # ResNet-18 has 41 modules with parameters: the classifier alone, then the whole model.
    assert summary["sanity_layers"] == 41 and summary["sanity_steps_reported"] == [1, 41]
    sanity = ["sanity_spearman_1_of_41", "sanity_ssim_1_of_41", "sanity_spearman_41_of_41", "sanity_ssim_41_of_41"]
    keys = [k for k, _, _ in COLUMNS_8] + ["road_morf", "road_lerf", "road_combined", "ssim_1", "corr_top_bottom",
                                         "corr_top_second", *sanity]
    records = results(out)
    for name, entry in summary["methods"].items():
        for record in records:
            values = record["metrics"][name]
            assert set(keys) <= set(values)
            if name in FORWARD_ONLY_OR_OWN_EXPLAIN:  # no captured gradients to perturb
                assert values["ssim_1"] is None
                assert entry["metrics"]["ssim_1"] == {"mean": None, "ci95": None, "n": 0}
            assert all(values[k] is not None and math.isfinite(values[k]) for k in keys if k != "ssim_1"
                       or name not in FORWARD_ONLY_OR_OWN_EXPLAIN)
            # Combined is (LeRF - MoRF) / 2 per percentile; with one percentile, of the means
            # too (float64 arithmetic on float32 scores: 1e-12).
            assert values["road_combined"] == pytest.approx((values["road_lerf"] - values["road_morf"]) / 2,
                                                            abs=1e-12)
        assert entry["milliseconds_per_image"] > 0
        assert entry["metrics"]["road_morf"]["n"] == 2 and entry["metrics"]["sanity_ssim_41_of_41"]["n"] == 2
    table = (out / "evaluate.md").read_text()
    assert table.strip() in printed
    assert "| Score-CAM |" in table and "n/a" in table and "ROAD combined ↑" in table and "ms / image" in table
    assert "Spearman 41/41 random ↓" in table


def test_methods_and_metrics_filter(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["evaluate", str(_two_photos(tmp_path)), *TINY, "--methods", "grad-cam, Eigen-CAM",
            "--metrics", "road,sanity", "--sanity-steps", "3", "--out", str(out)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == ["Grad-CAM", "Eigen-CAM"]  # registry order, whatever was asked
    assert summary["metric_groups"] == ["road", "sanity"] and summary["sanity_steps_reported"] == [1, 21, 41]
    for record in results(out):
        assert set(record["metrics"]["Grad-CAM"]) == {
            "road_morf", "road_lerf", "road_combined",
            *(f"sanity_{m}_{s}_of_41" for m in ("spearman", "ssim") for s in (1, 21, 41))}
    assert "Avg drop" not in capsys.readouterr().out


def test_bad_methods_metrics_and_photos(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["evaluate", "--methods", "grad-cam,gradcam", "--out", out]) == 1
    err = capsys.readouterr().err
    assert "unknown method(s) ['gradcam']" in err and "score-cam ('Score-CAM')" in err
    assert main(["evaluate", "--metrics", "road,speed", "--out", out]) == 1
    assert "unknown metric group(s) ['speed']" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--photos", "shipped", "--out", out]) == 1
    assert "give paths or --photos, not both" in capsys.readouterr().err
    for bad in (["--road-percentiles", "0,50"], ["--road-percentiles", "x"], ["--road-noise", "-1"],
                ["--sanity-steps", "0"], ["--photos", "all"]):
        with pytest.raises(SystemExit):
            main(["evaluate", *bad])


def test_evaluate_bad_input(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 1
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--scales", "a,b"])


def test_evaluate_skips_unreadable_files_and_says_so(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(data.chelsea()).resize((64, 48)).save(folder / "cat.png")
    (folder / "notes.jpg").write_text("not a JPEG")
    out = tmp_path / "out"
    fast = ["--backend", "reference", "--size", "64", "--steps", "1", "--methods", "grad-cam", "--metrics", "deletion"]
    assert main(["evaluate", str(folder), *fast, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"cfcam-fast: skipped {folder / 'notes.jpg'}: cannot read image" in captured.err
    assert "1 files skipped" in captured.out
    records = results(out)
    assert [r["file"] for r in records] == [str(folder / "cat.png"), str(folder / "notes.jpg")]
    assert "deletion_zero" in records[0]["metrics"]["Grad-CAM"] and set(records[1]) == {"file", "error"}
    assert json.loads((out / "summary.json").read_text())["methods"]["Grad-CAM"]["metrics"]["deletion_zero"]["n"] == 1
    (folder / "cat.png").unlink()
    assert main(["evaluate", str(folder), *fast, "--out", str(tmp_path / "none")]) == 1
    assert "cfcam-fast: error: no image could be read: all 1 failed" in capsys.readouterr().err


def test_photos_shipped(tmp_path):
    from cfcam_fast.data.photos import shipped_photos

    out = tmp_path / "out"
    assert main(["evaluate", "--photos", "shipped", *TINY, "--methods", "grad-cam", "--metrics", "deletion",
                 "--out", str(out)]) == 0
    names = sorted(name for name, _ in shipped_photos())
    assert [r["file"] for r in results(out)] == [f"shipped:{n}" for n in names]
    assert not (out / "photos").exists()  # read from the libraries, never written out
