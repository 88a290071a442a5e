"""``cfcam_fast.evaluation.evaluate`` from Python: per-image records, the summary with its
bootstrap intervals and the table, batch by batch, and its refusals."""
import pytest
import torch
from helpers import images, tiny_cnn

from cfcam_fast.evaluation import Settings, evaluate

METHODS = ["Grad-CAM", "CF-CAM gaussian/softmax"]


def test_records_summary_and_table():
    model, x = tiny_cnn(), images(batch=3)
    settings = Settings(batch_size=2, steps=2, scales=(0.5,), draws=1)
    got = evaluate(model, model.features, x, methods=METHODS, metrics=["confidence", "robustness"],
                   settings=settings, backend="reference")
    assert [r["index"] for r in got.records] == [0, 1, 2]  # two batches, numbered across them
    assert [r["class"] for r in got.records] == model.eval()(x).argmax(1).tolist()
    for name in METHODS:
        values = [r["metrics"][name]["ssim_0.5"] for r in got.records]
        stats = got.summary[name]["metrics"]["ssim_0.5"]
        # The mean of three float64 values in another order: equal to 1e-12.
        assert stats["n"] == 3 and stats["mean"] == pytest.approx(sum(values) / 3, rel=1e-12, abs=1e-12)
        assert min(values) <= stats["ci95"][0] <= stats["ci95"][1] <= max(values)
        assert name in got.table
    again = evaluate(model, model.features, x, methods=METHODS, metrics=["confidence", "robustness"],
                     settings=settings, backend="reference")
    assert again.records == [{**r, "timing": a["timing"]} for r, a in zip(got.records, again.records)]


def test_refusals_say_what_to_fix():
    model = tiny_cnn()
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        evaluate(model, model.features, torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="No-Such-CAM"):
        evaluate(model, model.features, images(batch=1), methods=["No-Such-CAM"])
    with pytest.raises(ValueError, match="nothing"):
        evaluate(model, model.features, images(batch=1), metrics=["nothing"])
