"""The GPU-session scripts of ``bench/`` (``device_checks``, ``device_session``,
``device_profile``) as dry runs on the CPU: every path timed or skipped, the reports written."""
import json

import pytest


@pytest.mark.slow
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


@pytest.mark.slow
def test_device_session_dry_run_on_the_cpu(tmp_path):
    """The whole-session command on the CPU, its slow stages skipped: summary and JSON
    written, skipped stages named, the checks' tables folded into the summary."""
    from bench import device_session

    skip = "build,gpu_tests,kernel_tests,memcheck,memcheck_graph,fused,export_pt2,profile,bench,road,dataset"
    rc = device_session.main(["--out", str(tmp_path), "--skip", skip, "--batches", "1", "--frames", "2"])
    assert rc == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| build | skipped (--skip) |" in summary and "| checks | passed |" in summary
    assert "| export_pt2 | skipped (--skip) |" in summary  # it needs CUDA
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


def test_device_session_times_the_cuda_pt2_and_folds_its_report(tmp_path):
    """``export_pt2`` runs ``bench.export_latency`` on CUDA after the checks; its table and
    JSON land in ``summary.md`` and ``session.json``."""
    from bench import device_session

    out, work = tmp_path / "out", tmp_path / "work"
    (work / "export").mkdir(parents=True), out.mkdir()
    groups = device_session.stages(work, "1", 7, "resnet18", "")
    names = [[stage.name for stage in group] for group in groups]
    assert names.index(["export_pt2"]) == names.index(["checks"]) + 1
    stage = groups[names.index(["export_pt2"])][0]
    assert stage.argv[1:5] == ["-m", "bench.export_latency", "--device", "cuda"] and stage.scratch_log
    assert stage.argv[stage.argv.index("--frames") + 1] == "7"
    table = "| model | path |\n|---|---|\n| resnet18 | AOTInductor .pt2, CF-CAM frame |\n"
    (work / "export" / "export_latency.md").write_text(table)
    (work / "export" / "export_latency.json").write_text('{"rows": [{"p50_ms": 1.0}]}')
    device_session.write_summary(out, work, {"versions": "test"}, groups)
    assert "## export_pt2" in (out / "summary.md").read_text()
    assert "| resnet18 | AOTInductor .pt2, CF-CAM frame |" in (out / "summary.md").read_text()
    assert json.loads((out / "session.json").read_text())["export_pt2"] == {"rows": [{"p50_ms": 1.0}]}


def test_device_profile_dry_run_on_the_cpu(capsys):
    from bench import device_profile

    device_profile.main(["--device", "cpu", "--calls", "1", "--rows", "3", "--only", "frame"])
    out = capsys.readouterr().out
    assert "===== CFCAM frame, resnet18, batch 1 (cpu)" in out and "ms per call" in out
