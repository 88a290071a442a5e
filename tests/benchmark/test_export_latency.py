"""``bench/export_latency.py`` as a dry run: every row timed, the ratios written."""
import json

import pytest


@pytest.mark.slow
def test_export_latency_dry_run(tmp_path):
    from bench import export_latency

    assert export_latency.main(["--models", "resnet18", "--frames", "2", "--skip-pt2", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "export_latency.json").read_text())
    paths = [row["path"] for row in report["rows"]]
    assert paths == ["ONNX Runtime, plain model", "ONNX Runtime, CF-CAM frame", "ONNX Runtime, Grad-CAM frame",
                     "RealtimeCFCAM (Python)", "plain model, eager PyTorch"]
    assert all(row["frames"] == 2 and row["p50_ms"] <= row["p99_ms"] for row in report["rows"])
    assert report["facts"]["threads"] == 1 and "onnxruntime" in report["facts"]
    assert "| resnet18 | ONNX Runtime, CF-CAM frame |" in (tmp_path / "export_latency.md").read_text()
