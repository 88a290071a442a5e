"""The benchmark runner on the CPU: smallest model, batch 1, one timed run, no warm-up.

Timings are never asserted; the table and the JSON must name every path, and a path is
either timed or skipped with a reason.
"""
import json

import pytest
import torch

from bench import runner
from bench.paths import path_names
from cfcam_fast import cli


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    status = runner.main(["--models", "resnet18", "--batches", "1", "--device", "cpu",
                          "--repeats", "1", "--warmup", "0", "--out", str(out)])
    return status, out


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


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    assert runner.main(["--models", " , ", "--out", str(tmp_path)]) == 1
    assert "--models" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        runner.main(["--batches", "0"])


def test_cli_registers_bench():
    parser = cli.build_parser("bench")
    args = parser.parse_args(["bench", "--quick", "--out", "x"])
    assert args.quick and args.out == "x" and args.run is not None


def test_device_session_dry_run_on_the_cpu(tmp_path):
    """The GPU session's script runs end to end on the CPU: every path timed or skipped."""
    from bench import device_session

    device_session.main(["--out", str(tmp_path), "--device", "cpu", "--batches", "1", "--repeats", "1"])
    report = json.loads((tmp_path / "device_session.json").read_text())
    assert len(report["timings"]) == len(device_session.PATHS)
    assert all(("ms_per_image" in row) != ("skipped" in row) for row in report["timings"])
    assert "| post-processing, torch backend, DBSCAN native | 1 |" in (tmp_path / "device_session.md").read_text()
