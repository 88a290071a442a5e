"""Models, layers, class names, photos and preprocessing of cfcam_fast.models."""
import numpy as np
import pytest
import torch
from PIL import Image

from cfcam_fast import models

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def lite0():
    return models.load_model()


def test_lite0_loads_the_wheel_weights_and_sees_the_cat(lite0):
    model, layer = lite0
    assert layer == "bn2" and not model.training
    photos = dict(models.bundled_photos())
    with torch.no_grad():
        logits = model(models.preprocess([photos["chelsea"], photos["coffee"]]))
    top = logits.argmax(1).tolist()
    assert top[0] in CAT_CLASSES
    assert models.imagenet_classes()[top[1]] == "espresso"


def test_load_by_position_checks_every_shape(lite0):
    model, _ = lite0
    state = {f"w{i}": t.clone() for i, t in enumerate(model.state_dict().values())}
    state["w0"] = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match=r"shape \(1, 2, 3\)"):
        models._load_by_position(model, state)
    with pytest.raises(ValueError, match="tensors"):
        models._load_by_position(model, dict(list(state.items())[1:]))


def test_other_models_and_their_default_layers(tmp_path):
    model, layer = models.load_model("resnet18")
    assert layer == "layer4" and not model.training
    path = tmp_path / "resnet18.pt"
    torch.save(model.state_dict(), path)
    again, _ = models.load_model("resnet18", weights=str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    # No layer4: the last module computed with a [B, C, H, W] output, H*W > 1.
    assert models.load_model("mobilenet_v3_small")[1] == "features"
    assert models.load_model("resnet10t")[1] == "layer4"  # a timm name


def test_bad_model_weights_and_layer_names(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'no_such_net'"):
        models.load_model("no_such_net")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a state dict")
    with pytest.raises(ValueError, match="cannot read weights"):
        models.load_model("resnet18", weights=str(bad))
    model, _ = models.load_model("resnet18")
    assert models.resolve_layer(model, "layer4.1.conv2") is model.layer4[1].conv2
    with pytest.raises(ValueError, match="unknown layer 'layer5'.*layer4"):
        models.resolve_layer(model, "layer5")


def test_classes_photos_preprocess_and_load_image(tmp_path):
    classes = models.imagenet_classes()
    assert len(classes) == 1000 and classes[285] == "Egyptian cat"
    photos = dict(models.bundled_photos())
    assert {"chelsea", "astronaut", "coffee", "rocket", "china", "flower"} <= set(photos)
    assert all(image.mode == "RGB" for image in photos.values())
    x = models.preprocess([photos["chelsea"], photos["china"]], size=64)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    white = models.preprocess([Image.new("RGB", (10, 7), (255, 255, 255))], size=8)
    expected = (1.0 - torch.tensor(models.IMAGENET_MEAN)) / torch.tensor(models.IMAGENET_STD)
    # 1e-6: float32 rounding of (1 - mean) / std.
    torch.testing.assert_close(white[0, :, 3, 3], expected, atol=1e-6, rtol=0)
    good = tmp_path / "gray.png"
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(good)
    assert models.load_image(good).mode == "RGB"
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"no pixels here")
    with pytest.raises(ValueError, match="cannot read image .*bad.jpg"):
        models.load_image(bad)
