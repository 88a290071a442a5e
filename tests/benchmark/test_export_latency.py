"""``bench/export_latency.py`` as a dry run: every row timed, the ratios written."""
import json

import pytest
import torch


@pytest.mark.slow
def test_export_latency_dry_run(tmp_path):
    from bench import export_latency

    assert export_latency.main(["--models", "resnet18", "--frames", "2", "--skip-pt2", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "export_latency.json").read_text())
    paths = [row["path"] for row in report["rows"]]
    assert paths == ["ONNX Runtime, plain model", "ONNX Runtime, CF-CAM frame", "ONNX Runtime, Grad-CAM frame",
                     "RealtimeCFCAM (Python)", "plain model, eager PyTorch"]
    assert all(row["frames"] == 2 and row["p50_ms"] <= row["p99_ms"] for row in report["rows"])
    assert report["facts"]["threads"] == 1 and "onnxruntime" in report["facts"] and report["facts"]["device"] == "cpu"
    assert "| resnet18 | ONNX Runtime, CF-CAM frame |" in (tmp_path / "export_latency.md").read_text()


def test_export_latency_device_option(capsys):
    """``--device`` is ``cpu`` or ``cuda``; ``cuda`` without a CUDA device is a usage error."""
    from bench import export_latency

    with pytest.raises(SystemExit) as exc:
        export_latency.main(["--device", "tpu"])
    assert exc.value.code == 2 and "invalid choice: 'tpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exc:
            export_latency.main(["--device", "cuda"])
        assert exc.value.code == 2 and "needs a CUDA device" in capsys.readouterr().err


def test_export_latency_synchronises_cuda_frames_only(monkeypatch):
    """On CUDA every timed frame waits for the device; on the CPU nothing is waited for."""
    from bench import export_latency

    waits = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: waits.append(a))
    assert export_latency.synchronizer(torch.device("cuda")) is torch.cuda.synchronize
    export_latency.time_here(lambda: None, 3, export_latency.synchronizer(torch.device("cuda")))
    assert len(waits) == 4  # after each of the 3 timed frames, and once after the 10 warm-up frames
    export_latency.synchronizer(torch.device("cpu"))()
    assert len(waits) == 4
