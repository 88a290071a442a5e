"""Models, layers, class names, photos and preprocessing of cfcam_fast.models."""
import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image

from cfcam_fast.cams.imagenet import IMAGENET_MEAN, IMAGENET_STD
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


def test_shipped_photos_extend_the_bundled_ones():
    bundled = [name for name, _ in photo_sets.bundled_photos()]
    shipped = photo_sets.shipped_photos()
    names = [name for name, _ in shipped]
    assert len(names) == len(set(names)) and set(bundled) <= set(names)
    assert {"grace_hopper", "camera", "retina"} <= set(names)  # matplotlib's photo, a grey one, a large one
    assert all(image.mode == "RGB" and min(image.size) >= 100 for _, image in shipped)


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


def test_transformers_get_a_norm1_layer_and_a_reshape_to_the_patch_grid():
    vit, layer = models.load_model("vit_tiny_patch16_224")
    assert layer == "blocks.11.norm1" and layers.token_layout(vit) == "vit"
    tokens = torch.arange(197.0)[None, :, None].expand(2, 197, 192)
    grid = layers.reshape_transform(vit)(tokens)
    assert grid.shape == (2, 192, 14, 14)  # the class token dropped, the rest row by row
    assert torch.equal(grid[1, 5], torch.arange(1.0, 197.0).reshape(14, 14))
    assert layers.check_layer(vit, layer, layers.reshape_transform(vit)) == (1, 192, 14, 14)
    with pytest.raises(ValueError, match=r"gives shape \(1, 197, 192\).*--reshape vit"):
        layers.check_layer(vit, layer, layers.reshape_transform(vit, "none"))
    with pytest.raises(ValueError, match="cannot run on 64x64 images"):
        layers.check_layer(vit, layer, layers.reshape_transform(vit), size=64)
    deit = models.load_model("deit_tiny_distilled_patch16_224")[0]
    assert layers.reshape_transform(deit)(torch.zeros(1, 198, 192)).shape == (1, 192, 14, 14)
    # A small timm Swin (one block per stage): its blocks give [B, H, W, C].
    swin = timm.create_model("swin_tiny_patch4_window7_224", depths=(1, 1, 1, 1), embed_dim=32,
                             num_heads=(1, 1, 1, 1))
    assert (layers.token_layout(swin), layers.default_layer(swin)) == ("swin", "layers.3.blocks.0.norm1")
    assert layers.check_layer(swin, "layers.3.blocks.0.norm1", layers.reshape_transform(swin)) == (1, 256, 7, 7)
    small_vit = torchvision.models.VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=1,
                                                    hidden_dim=8, mlp_dim=8)
    assert (layers.token_layout(small_vit), layers.default_layer(small_vit)) == \
        ("vit", "encoder.layers.encoder_layer_1.ln_1")
    assert layers.check_layer(small_vit, "encoder.layers.encoder_layer_1.ln_1", layers.reshape_transform(small_vit),
                              size=64) == (1, 8, 4, 4)
    resnet = torchvision.models.resnet18()
    assert layers.token_layout(resnet) == "none" and layers.reshape_transform(resnet) is None
    with pytest.raises(ValueError, match=r"reshape 'vit': ResNet has no patch grid"):
        layers.reshape_transform(resnet, "vit")


def test_classes_photos_preprocess_and_load_image(tmp_path):
    classes = models.imagenet_classes()
    assert len(classes) == 1000 and classes[285] == "Egyptian cat"
    photos = dict(photo_sets.bundled_photos())
    assert {"chelsea", "astronaut", "coffee", "rocket", "china", "flower"} <= set(photos)
    assert all(image.mode == "RGB" for image in photos.values())
    x = images.preprocess([photos["chelsea"], photos["china"]], size=64)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    white = images.preprocess([Image.new("RGB", (10, 7), (255, 255, 255))], size=8)
    expected = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    # 1e-6: float32 rounding of (1 - mean) / std.
    torch.testing.assert_close(white[0, :, 3, 3], expected, atol=1e-6, rtol=0)
    good = tmp_path / "gray.png"
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(good)
    assert images.load_image(good).mode == "RGB"
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"no pixels here")
    with pytest.raises(ValueError, match="cannot read image .*bad.jpg"):
        images.load_image(bad)
