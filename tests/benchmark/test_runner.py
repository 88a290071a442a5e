"""The benchmark runner (``cfcam_fast.benchmark``) on the CPU: smallest model, batch 1, one
timed run, no warm-up.

Timings are never asserted; the table and the JSON must name every path, and a path is
either timed or skipped with a reason."""
import json

import pytest
import torch

from cfcam_fast import cli
from cfcam_fast.benchmark.paths import path_names


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    status = cli.main(["bench", "--models", "resnet18", "--batches", "1", "--device", "cpu",
                          "--repeats", "1", "--warmup", "0", "--out", str(out)])
    return status, out


@pytest.mark.slow
def test_runner_writes_every_path(quick_run, capsys):
    status, out = quick_run
    assert status == 0
    names = path_names(torch.device("cpu"))
    table = (out / "results.md").read_text()
    doc = json.loads((out / "results.json").read_text())
    rows = doc["results"]
    assert [r["path"] for r in rows] == names
    for name in names:
        assert f"| {name} |" in table
    for r in rows:
        assert (r["median_s"] is None) == bool(r["skipped"]), r
        assert r["model"] == "resnet18" and r["batch"] == 1 and r["layer_shape"] == [1, 512, 7, 7]
    assert doc["device"] == "cpu" and doc["machine"]["cpu_count"] >= 1
    assert doc["versions"]["torch"] == torch.__version__ and "git_commit" in doc
    assert (out / "results.png").stat().st_size > 0


def test_paths_times_only_the_chosen_rows_and_the_floor(tmp_path, capsys):
    out = tmp_path / "b"
    assert cli.main(["bench", "--models", "resnet18", "--batches", "1", "--device", "cpu", "--repeats", "1",
                        "--warmup", "0", "--paths", "dbscan NATIVE", "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    timed = [r["path"] for r in doc["results"] if r["median_s"] is not None]
    assert timed == ["floor: forward + backward to layer", "cfcam_fast torch, DBSCAN native",
                     "cfcam_fast torch, DBSCAN native, post-processing only"]
    assert {r["skipped"] for r in doc["results"] if r["path"] not in timed} >= {"not selected (--paths)"}
    assert doc["settings"]["paths"] == ["dbscan NATIVE"]
    assert cli.main(["bench", "--paths", "native,warp", "--device", "cpu", "--out", str(out)]) == 1
    assert "--paths: ['warp'] match no path; the paths are: floor" in capsys.readouterr().err
