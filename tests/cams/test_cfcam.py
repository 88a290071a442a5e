"""``CFCAM`` (``cams.cfcam``) on a model: the fields of its result, each image explained
independently of its batch, one plan resolved per call for all its layers, and the real
pretrained EfficientNet-Lite0 on the cat photo. Backend "reference" (the fast backends are
compared with it in tests/core/backends)."""
import numpy as np
import torch
from helpers import cfcam_model, chelsea_batch, efficientnet_lite0, hooks_left, images, plan_of, tiny_cnn

import cfcam_fast as cf
from cfcam_fast.cams import cfcam as cam_module
from cfcam_fast.plan import resolve_plan


def test_result_fields():
    model, x = tiny_cnn(), images()
    with cfcam_model(model, [model.features]) as cam:
        res = cam.explain(x)
    assert isinstance(res, cf.CFCAMResult)
    for field in ("labels", "channel_weights", "weights"):
        assert getattr(res, field).shape == (3, 12), field
    assert res.labels.dtype == torch.int64 and res.eps.shape == (3,)
    assert res.class_idx.shape == (3,) and res.logits.shape == (3, 5)
    # alpha: a softmax over the kept channels, 0 for noise.
    noise = res.labels == -1
    assert torch.all(res.weights[noise] == 0) and torch.all(res.channel_weights[noise] == 0)
    torch.testing.assert_close(res.weights.sum(1), torch.ones(3))


def test_each_image_is_explained_independently_of_its_batch():
    # A batch of 3 against each image alone: every statistic of docs/algorithm.md is per image, so
    # labels are identical and maps and weights equal up to the float32 rounding by which a
    # batched convolution may differ from a single-image one (measured: 1.8e-7 on the maps,
    # which lie in [0, 1]; 1e-6 allows a few ulps more). The core itself gives exactly
    # equal results (tests/core/backends/test_reference.py::test_batch_images_are_independent).
    model, x = tiny_cnn(), images()
    with cfcam_model(model, [model.features]) as cam:
        batch = cam.explain(x)
        for b in range(3):
            alone = cam.explain(x[b:b + 1])
            assert torch.equal(batch.labels[b], alone.labels[0])
            assert torch.equal(batch.class_idx[b], alone.class_idx[0])
            for field in ("maps", "channel_weights", "weights"):
                torch.testing.assert_close(getattr(batch, field)[b], getattr(alone, field)[0],
                                           rtol=1e-6, atol=1e-6)


def test_cfcam_explain_resolves_one_plan_for_all_its_layers(monkeypatch):
    calls = []

    def counted(*args):
        calls.append(args)
        return resolve_plan(*args)

    monkeypatch.setattr(cam_module, "resolve_plan", counted)
    model = tiny_cnn()
    with cf.CFCAM(model, [model.stem, model.features], config=cf.CFCAMConfig(dbscan_backend="torch")) as cam:
        result = cam.explain(images())
    assert len(calls) == 1
    assert result.plan == plan_of("auto", "torch")


def test_efficientnet_lite0_on_chelsea():
    model, layer = efficientnet_lite0()
    assert layer == "bn2"
    x = chelsea_batch()
    with cfcam_model(model, [model.get_submodule(layer)]) as cam:
        res = cam.explain(x)
    assert 281 <= res.class_idx.item() <= 285  # ImageNet's cat classes (tabby .. Egyptian cat)
    assert res.maps.shape == (1, 224, 224) and res.maps.dtype == torch.float32
    assert torch.isfinite(res.maps).all() and res.maps.min() >= 0 and res.maps.max() == 1
    assert res.labels.shape == (1, 1280)
    # About the top quarter of the 1280 channels is important (ties at tau may add a few).
    assert 320 <= int((res.labels == -2).sum()) <= 330
    assert np.isfinite(res.eps.item()) and res.eps.item() > 0
    assert hooks_left(model) == {} and not model.training
