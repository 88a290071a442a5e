"""The benchmark runner on the CPU: smallest model, batch 1, one timed run, no warm-up.

Timings are never asserted; the table and the JSON must name every path, and a path is
either timed or skipped with a reason.
"""
import json
import subprocess
import sys

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


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    assert cli.main(["bench", "--models", " , ", "--out", str(tmp_path)]) == 1
    assert "--models" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "--batches", "0"])


def test_cli_registers_bench():
    parser = cli.build_parser("bench")
    args = parser.parse_args(["bench", "--quick", "--out", "x"])
    assert args.quick and args.out == "x" and args.run is not None


def test_bench_command_needs_no_checkout(tmp_path):
    """``cfcam-fast bench`` imports the runner from the package: run from a folder with no
    ``bench/`` in reach, its options parse and no top-level ``bench`` module is loaded."""
    code = ("import sys\nfrom cfcam_fast.cli import build_parser\n"
            "args = build_parser('bench').parse_args(['bench', '--quick'])\n"
            "assert args.quick and 'bench' not in sys.modules, sorted(sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_device_checks_dry_run_on_the_cpu(tmp_path):
    """The GPU session's checks run end to end on the CPU: every path timed or skipped."""
    from bench import device_checks

    device_checks.main(["--out", str(tmp_path), "--device", "cpu", "--batches", "1", "--repeats", "1",
                        "--frames", "2", "--latency-models", "resnet18"])
    report = json.loads((tmp_path / "device_checks.json").read_text())
    assert len(report["timings"]) == len(device_checks.PATHS)
    assert all(("ms_per_image" in row) != ("skipped" in row) for row in report["timings"])
    assert [row["frames"] for row in report["latency"]] == [2, 2, 2, 2]
    assert all(row["p50_ms"] <= row["p99_ms"] <= row["max_ms"] for row in report["latency"])
    text = (tmp_path / "device_checks.md").read_text()
    assert "| post-processing, torch backend, DBSCAN native | 1 |" in text
    assert "| resnet18 | RealtimeCFCAM |" in text and "| resnet18 | floor |" in text


def test_device_session_dry_run_on_the_cpu(tmp_path):
    """The whole-session command on the CPU, its slow stages skipped: summary and JSON
    written, skipped stages named, the checks' tables folded into the summary."""
    from bench import device_session

    skip = "build,gpu_tests,kernel_tests,memcheck,memcheck_graph,fused,profile,bench,road,dataset"
    rc = device_session.main(["--out", str(tmp_path), "--skip", skip, "--batches", "1", "--frames", "2"])
    assert rc == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| build | skipped (--skip) |" in summary and "| checks | passed |" in summary
    assert "### timings" in summary
    session = json.loads((tmp_path / "session.json").read_text())
    assert session["stages"]["checks"]["status"] == "passed"
    assert session["checks"]["latency"]
    assert len(list(tmp_path.iterdir())) <= 8  # what a device run can bring back


def test_device_session_folds_the_fused_report_and_finds_test_files(tmp_path):
    from bench import device_session

    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir(), work.mkdir()
    (work / "fused.log").write_text('$ python -m bench.fused_pairs\nwarming up\n{"exact": true, "fused_ms": 1.5}\n')
    groups = device_session.stages(work, "1", 2, "resnet18", "")
    device_session.write_summary(out, work, {"versions": "test"}, groups)
    assert '"fused_ms": 1.5' in (out / "summary.md").read_text()
    assert json.loads((out / "session.json").read_text())["fused"] == {"exact": True, "fused_ms": 1.5}
    found = device_session.test_files(device_session.MEMCHECK_TESTS)
    assert len(found) == len(device_session.MEMCHECK_TESTS), found  # each name is one file


def test_device_profile_dry_run_on_the_cpu(capsys):
    from bench import device_profile

    device_profile.main(["--device", "cpu", "--calls", "1", "--rows", "3", "--only", "frame"])
    out = capsys.readouterr().out
    assert "===== CFCAM frame, resnet18, batch 1 (cpu)" in out and "ms per call" in out
