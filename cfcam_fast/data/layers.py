"""Target layers of a model: the default one, a name looked up, the shape it gives, and
the ``reshape_transform`` for token layouts (ViT, Swin)."""
from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..cams.model_state import eval_mode, forward_hooks, layer_outputs

DEFAULT_MODEL = "efficientnet_lite0"  # its natural layer is bn2


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
    embed: Any = getattr(model, "patch_embed", None)
    if hasattr(embed, "grid_size"):
        prefix = int(getattr(model, "num_prefix_tokens", 1))
        h, w = map(int, embed.grid_size)
    elif hasattr(model, "image_size") and hasattr(model, "patch_size"):
        torchvision_vit: Any = model
        prefix, h = 1, int(torchvision_vit.image_size) // int(torchvision_vit.patch_size)
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
    module = resolve_layer(model, layer)
    device = next(model.parameters(), torch.empty(0)).device
    try:
        with layer_outputs([module], keep=lambda out: out.shape if isinstance(out, torch.Tensor) else None) \
                as recorded, eval_mode(model), torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=device))
    except Exception as exc:  # a model refuses an input size with AssertionError, RuntimeError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{type(model).__name__} cannot run on {size}x{size} images: {first}") from exc
    shapes = recorded[0]
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
    named = [(name, module) for name, module in model.named_modules() if name]
    finished: list[str] = []

    def spatial(i: int, _module: nn.Module, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2:].numel() > 1:
            finished.append(named[i][0])

    device = next(model.parameters(), torch.empty(0)).device
    with forward_hooks([m for _, m in named], spatial), eval_mode(model), torch.no_grad():
        model(torch.zeros(1, 3, size, size, device=device))
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
