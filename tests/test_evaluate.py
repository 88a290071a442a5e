"""``cfcam-fast evaluate`` on two photos, in-process, with the real EfficientNet-Lite0."""
import json

import pytest
from PIL import Image
from skimage import data

from cfcam_fast.cli import main
from cfcam_fast.commands.evaluate import COLUMNS


@pytest.mark.slow
def test_evaluate_two_photos(tmp_path, capsys):
    Image.fromarray(data.chelsea()).save(tmp_path / "cat.png")
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    out = tmp_path / "out"
    # Small images and few steps keep this fast on a CPU; the full defaults are for real runs.
    code = main(["evaluate", str(tmp_path / "cat.png"), str(tmp_path / "coffee.png"), "--backend", "reference",
                 "--size", "64", "--steps", "2", "--scales", "0.5", "--draws", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "evaluate.json").read_text())
    assert report["images"] == ["cat", "coffee"] and report["layer"] == "bn2"
    methods = list(report["methods"])
    assert methods == [f"CF-CAM {f}/{w}" for f in ("gaussian", "official")
                       for w in ("softmax", "standardized", "linear")] + ["Grad-CAM", "Grad-CAM++"]
    keys = [key for key, _, _ in COLUMNS] + ["ssim_0.5", "corr_top_bottom", "corr_top_second"]
    for name, entry in report["methods"].items():
        for key in keys:
            values = entry["per_image"][key]
            assert len(values) == 2 and entry["mean"][key] == pytest.approx(sum(values) / 2, abs=1e-6)
        assert all(0.0 <= v <= 100.0 for v in entry["per_image"]["average_drop"])
        assert all(-1.0 <= v <= 1.0 for v in entry["per_image"]["corr_top_bottom"])
        assert f"| {name} |" in printed
    assert (out / "evaluate.md").read_text().strip() in printed
    with Image.open(out / "evaluate.png") as png:
        assert png.size[0] > 600 and png.size[1] > 300


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
    fast = ["--backend", "reference", "--size", "64", "--steps", "1", "--scales", "1", "--draws", "1"]
    assert main(["evaluate", str(folder), *fast, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"cfcam-fast: skipped {folder / 'notes.jpg'}: cannot read image" in captured.err
    assert "1 files skipped" in captured.out
    report = json.loads((out / "evaluate.json").read_text())
    assert report["images"] == ["cat"] and len(report["methods"]["Grad-CAM"]["per_image"]["deletion_zero"]) == 1
    assert report["skipped"][0]["file"] == str(folder / "notes.jpg") and "error" in report["skipped"][0]
    (folder / "cat.png").unlink()
    assert main(["evaluate", str(folder), *fast, "--out", str(tmp_path / "none")]) == 1
    assert "cfcam-fast: error: no image could be read: all 1 failed" in capsys.readouterr().err
