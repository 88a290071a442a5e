"""Model-parameter randomization test (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

A map that explains the model should change when the model's weights are replaced by
random ones; one that stays the same is explaining the input (edges, say), not the model.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..cams.base import BaseCAM
from ..cams.model_state import model_lock
from ..cams.targets import Targets
from .inputs import check_cam, check_images, check_seed
from .similarity import pearson, ssim

ORDERS = ("cascading", "independent")


class Sanity(NamedTuple):
    """``randomization_sanity``'s result: the randomised layers by module name (``steps``,
    output layer first), the indices into ``steps`` that were explained (``at``) and, per
    explained step and image, the Spearman rank correlation and the SSIM between the
    original and the randomised maps (``[len(at), B]`` each; ``mean(1)`` gives the per-step
    means)."""

    steps: list[str]
    spearman: torch.Tensor
    ssim: torch.Tensor
    at: list[int]


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks ``0..n-1`` of each row of ``[B, n]``, tied values sharing their mean rank
    (``scipy.stats.rankdata(method="average") - 1``)."""
    values = x.double().sort(dim=1).values
    first = torch.searchsorted(values, x.double().contiguous(), right=False)
    last = torch.searchsorted(values, x.double().contiguous(), right=True) - 1
    return (first + last).double() / 2


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per image of ``[B, ...]`` maps (average ranks for ties, as
    ``scipy.stats.spearmanr``); a constant map gives 1.0 against a constant map and 0.0
    against any other (``similarity.pearson``'s rule), never NaN."""
    r, _ = pearson(_average_ranks(a.flatten(1)), _average_ranks(b.flatten(1)))
    return r.to(a.dtype)


def randomizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules that own parameters themselves, by name, output side first (the reverse
    of ``named_modules`` order, which follows the definition order of the model)."""
    return [(name, m) for name, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None][::-1]


def _reinitialise(module: nn.Module, seed: int) -> None:
    """Fresh parameters for ``module``: its own ``reset_parameters`` (PyTorch's initial
    values; BatchNorm also resets its running statistics), or, for a module without one,
    each parameter drawn from a normal with the parameter's own mean and standard deviation."""
    # torch.manual_seed seeds every CUDA device too, so every one's state is saved and restored.
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():  # the caller's random state is kept
        torch.manual_seed(seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            return
        for p in module.parameters(recurse=False):
            std = float(p.std()) if p.numel() > 1 else 0.0
            p.normal_(float(p.mean()), std)


def randomization_sanity(cam: BaseCAM, images: torch.Tensor, targets: Targets = None, *, order: str = "cascading",
                         seed: int = 0, at: Sequence[int] | None = None,
                         original_maps: torch.Tensor | None = None) -> Sanity:
    """How much ``cam``'s maps change as the model's layers are re-initialised, output first.

    The model is deep-copied (the caller's model, its parameters, flags and hooks, is never
    touched); ``cam.target_layers`` are found in the copy by module name, and the same CAM
    (``copy.copy(cam)``: class and settings) is rebuilt on the copy. Steps are the modules
    that own parameters (``randomizable_layers``), output side first. ``"cascading"``:
    step ``s`` has the first ``s + 1`` of them re-initialised; ``"independent"``: only the
    ``s``-th. Layer ``s`` is re-initialised from seed ``seed + s`` either way, so both orders
    draw the same weights for it. Targets are fixed to the classes the original model
    explains (``targets``, or its arg-max), so every map explains the same class.
    ``at``: the step indices (into ``steps``; negative ones count from the end) at which to
    explain and report, default every step. Every layer is still re-initialised in order;
    only the explanations of the other steps are skipped.
    ``original_maps``: ``cam``'s maps ``[B, H, W]`` of ``images`` for ``targets``, when the
    caller has them already (``targets`` is then required): saves one explanation.
    Returns per reported step the Spearman correlation and SSIM of each image's maps with
    the original ones: values that stay near 1 mean the maps do not depend on those weights.
    """
    check_cam(cam)
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    check_seed(seed)
    check_images(images)
    names = {id(m): name for name, m in cam.model.named_modules()}
    missing = [type(layer).__name__ for layer in cam.target_layers if id(layer) not in names]
    if missing:
        raise ValueError(f"target layers {missing} are not modules of cam.model; give layers of the model")
    classes: Targets
    if original_maps is None:
        original = cam.explain(images, targets)
        classes, original_maps = original.class_idx, original.maps
    elif targets is None:
        raise ValueError("original_maps needs the targets they explain: pass targets too")
    elif not isinstance(original_maps, torch.Tensor) or original_maps.dim() != 3 \
            or original_maps.shape[0] != images.shape[0]:
        raise ValueError(f"original_maps must be a [B, H, W] tensor with B = {images.shape[0]}, got "
                         f"{tuple(getattr(original_maps, 'shape', ())) or type(original_maps).__name__}")
    else:
        classes = targets
    with model_lock(cam.model):  # no call of another thread is half-way through the model
        pristine = copy.deepcopy(cam.model)
    layer_names = [names[id(layer)] for layer in cam.target_layers]
    steps = [name for name, _ in randomizable_layers(pristine)]
    if not steps:
        raise ValueError("cam.model has no parameters to randomise")
    wanted = _step_indices(at, len(steps))
    rank_corr, similarity = [], []
    model = pristine
    for s, name in enumerate(steps[:wanted[-1] + 1]):
        if order == "independent":
            if s not in wanted:
                continue  # nothing to explain, and no later step builds on this copy
            model = copy.deepcopy(pristine)
        _reinitialise(model.get_submodule(name), seed + s)
        if s not in wanted:
            continue
        randomised = copy.copy(cam)
        randomised.model = model
        randomised.target_layers = [model.get_submodule(n) for n in layer_names]
        maps = randomised.explain(images, classes).maps
        rank_corr.append(spearman(original_maps, maps))
        similarity.append(ssim(original_maps, maps))
    return Sanity(steps, torch.stack(rank_corr), torch.stack(similarity), wanted)


def _step_indices(at: Sequence[int] | None, count: int) -> list[int]:
    """``at`` as sorted, distinct step indices in ``[0, count)``; ``None``: every step."""
    if at is None:
        return list(range(count))
    values = list(at) if not isinstance(at, (int, str, bytes)) else None
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ValueError(f"at must be a non-empty list of step indices (ints), got {at!r}")
    bad = [v for v in values if not -count <= v < count]
    if bad:
        raise ValueError(f"at: step indices {bad} are out of range; this model has {count} steps (0 to {count - 1})")
    return sorted({v % count for v in values})
