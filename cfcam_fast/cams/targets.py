"""What to explain in each image: the one parser of ``targets``, used everywhere.

Every call that takes ``targets`` (the CAMs, ``RealtimeCFCAM``, the metrics) accepts the
same things:

- ``None``: each image's top class (the arg-max of its logits);
- an int: that class for every image;
- an integer ``[B]`` tensor: one class per image;
- a sequence of ``B`` entries, each an int, an object with an int ``category`` (such as
  grad-cam's ``ClassifierOutputTarget``), or a callable mapping one image's logits to the
  scalar score to explain.

Where only classes make sense (the metrics, ``RealtimeCFCAM``), a callable without a
``category`` is refused with a message saying so.
"""
from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
Target = int | ScoreFn
Targets = None | int | torch.Tensor | Sequence[Any]


def _as_class(value: Any) -> int | None:
    """``value`` as a class index if it is an integer (not a bool), else ``None``."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def per_image(targets: Targets, batch: int) -> list[Target] | None:
    """``targets`` as one entry per image (an int class or a callable), or ``None`` for
    each image's top class; ``ValueError`` saying what to give otherwise."""
    if targets is None:
        return None
    if isinstance(targets, torch.Tensor):
        if targets.dim() != 1 or targets.shape[0] != batch or targets.is_floating_point() \
                or targets.dtype == torch.bool:
            raise ValueError(f"targets tensor must be an integer tensor of shape [{batch}], "
                             f"got {targets.dtype} {tuple(targets.shape)}")
        return [int(t) for t in targets.tolist()]
    single = _as_class(targets)
    if single is not None:
        return [single] * batch
    if isinstance(targets, (str, bytes, bool)) or not isinstance(targets, Sequence):
        raise ValueError("targets must be None, an int, a sequence of ints or callables, or an integer tensor; "
                         f"got {type(targets).__name__}")
    if len(targets) != batch:
        raise ValueError(f"got {len(targets)} targets for a batch of {batch} images; give one per image")
    parsed: list[Target] = []
    for b, target in enumerate(targets):
        category = _as_class(getattr(target, "category", None))
        if callable(target):
            parsed.append(target)
        elif category is not None:
            parsed.append(category)
        elif _as_class(target) is not None:
            parsed.append(operator.index(target))
        elif hasattr(target, "__index__") and not isinstance(target, bool):
            raise ValueError(f"target {b} must be an integer class index, got {target!r}")
        else:
            raise ValueError(f"target {b} must be an int or a callable, got {type(target).__name__}")
    return parsed


def target_scores(logits: torch.Tensor, targets: Targets) -> tuple[torch.Tensor, torch.Tensor]:
    """The scalar score per image to differentiate, and the class index per image (-1 where
    a callable without a ``category`` names no class)."""
    flat = logits.flatten(1)
    B, n_classes = flat.shape
    entries = per_image(targets, B)
    if entries is None:
        idx = flat.detach().argmax(1)
        return flat.gather(1, idx[:, None])[:, 0], idx
    scores, classes = [], []
    for b, target in enumerate(entries):
        if callable(target):
            score = target(logits[b])
            if not isinstance(score, torch.Tensor) or score.numel() != 1:
                raise ValueError(f"target {b} must return a scalar tensor, got {score!r}")
            scores.append(score.reshape(()))
            category = _as_class(getattr(target, "category", None))
            classes.append(-1 if category is None else category)
        else:
            if not 0 <= target < n_classes:
                raise ValueError(f"target {b} is class {target}, outside [0, {n_classes})")
            scores.append(flat[b, target])
            classes.append(target)
    return torch.stack(scores), torch.tensor(classes, dtype=torch.int64, device=logits.device)


def class_indices(targets: Targets, batch: int, device: torch.device | str) -> torch.Tensor | None:
    """One class index per image as an int64 ``[B]`` tensor on ``device``, or ``None`` for
    each image's top class; a callable target must carry a ``category``."""
    entries = per_image(targets, batch)
    if entries is None:
        return None
    values = []
    for b, target in enumerate(entries):
        if callable(target):
            category = _as_class(getattr(target, "category", None))
            if category is None:
                raise ValueError(f"target {b} is a callable without a 'category': this needs class indices, "
                                 "so give ints (or targets with an int 'category')")
            target = category
        values.append(target)
    return torch.tensor(values, dtype=torch.int64, device=device)


def for_copies(targets: Targets, class_idx: torch.Tensor) -> list[Target]:
    """One target per image for later forwards of copies of it (masked or noisy images):
    the image's callable target where one was given, else its explained class."""
    classes = class_idx.tolist()
    entries = per_image(targets, len(classes))
    if entries is None:
        return classes
    return [t if callable(t) else c for t, c in zip(entries, classes)]
