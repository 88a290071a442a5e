"""DBSCAN labels (docs/algorithm.md step 4) from a neighbour mask, by star hooking, in a
loop whose round count is bounded in advance.

Core points are those with at least ``min_samples`` neighbours; the components of core
points are found by the rounds below; border points and numbering follow
``core.cluster.torch_dbscan.number_clusters`` (scikit-learn's labels exactly). Only integer
operations, so the labels are exact on any runtime.

The rounds and why ``R = 2 ceil(log2 n)`` of them suffice
---------------------------------------------------------
State: ``lab[i]`` for each core point is a pointer to a core point with ``lab[i] <= i`` in
the same component (initially ``lab[i] = i``); roots have ``lab[r] = r``. One *round*:

a. ``seen[i] = min lab[j]`` over the core neighbours ``j`` of core point ``i`` (``i``
   included);
b. hooking: every root ``r`` takes ``min(r, min seen[i] over the members i of its tree)``
   (``scatter_reduce(amin)`` at index ``lab``); other points are not changed;
c. pointer jumping ``lab <- lab[lab]``, ``bit_length(n)`` times
   (``torch_dbscan.pointer_jump``).

Invariant: pointers only decrease and stay inside the component, so the pointer graph is a
forest with strictly decreasing chains (depth ``<= n - 1 < 2^bit_length(n)``); after (c)
every tree is a star (all members point at the root). Trees never split: a point moves only
up its own tree.

*Stopping rule.* If a round changes nothing, no root has a core neighbour of a member with a
smaller label, so no two different stars are adjacent: each component is one star whose
root is its smallest index (all pointers decrease). Labels decrease and are bounded, so the
loop ends.

*The bound.* Take the stars after some round t. In round t+1 every star ``s`` with an
adjacent star of smaller root hooks onto one, i.e. merges with another star of time t. A
star ``s`` that is a local minimum (all adjacent stars have larger roots) does not hook, but
each adjacent star ``a`` hooks onto some ``h(a) <= s``: if some ``h(a) = s``, ``s`` has
merged; otherwise ``a`` joined a tree whose root is ``< s``, so in round t+2 ``s`` has a
smaller adjacent root and hooks. So after round t+2 every star of time t lies in a tree
holding at least two stars of time t, unless it is alone in its component: the number of
stars per component at least halves every two rounds. Starting from at most ``n`` singleton
stars, ``R = 2 ceil(log2 n)`` rounds leave one star per component (R = 18 at ResNet-18's
``layer4``, n = 384; 20 at EfficientNet-Lite0's ``bn2``, n = 960).

``loop="while"`` runs rounds until one changes nothing, capped at ``R`` (a loop that reaches
``R`` has converged, by the bound), so its cost is bounded in advance; 2 to 4 rounds run on
real activations. ``loop="unrolled"`` runs exactly ``R`` rounds, for runtimes without loops.
"""
from __future__ import annotations

import math

import torch

from ..cluster.torch_dbscan import number_clusters, pointer_jump
from .tracing import while_loop

LOOPS = ("while", "unrolled")


def rounds_bound(n: int) -> int:
    """``2 ceil(log2 n)`` (at least 1): rounds that provably leave one star per component."""
    return max(1, 2 * math.ceil(math.log2(max(n, 2))))


def smallest_core_label(to_core: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
    """``torch_dbscan.min_neighbour_label(to_core, lab, n)`` for an int32 0/1 ``to_core``
    ``[B, n, n]``: ``min_j to_core[i, j] (lab[j] - n) + n``, exact in int32 (``lab <= n``).
    A product over the broadcast row instead of a ``Where``, which ONNX Runtime runs several
    times slower on ``[B, n, n]`` (bench/RESULTS.md, "Exported frames")."""
    n = lab.shape[1]
    return (to_core * (lab - n)[:, None, :]).amin(2) + n


def hooking_round(lab: torch.Tensor, to_core: torch.Tensor, core: torch.Tensor) -> torch.Tensor:
    """One round (a-c of the module docstring) on ``lab`` (int32 ``[B, n]``, ``n`` for
    points that are not core) with ``to_core`` int32 0/1 (``smallest_core_label``; pass (a)
    over ``[B, n, n]`` is the round's main cost)."""
    n = lab.shape[1]
    seen = torch.where(core, smallest_core_label(to_core, lab), n)
    lab = lab.scatter_reduce(1, lab.clamp(max=n - 1).long(), seen, reduce="amin", include_self=True)
    return pointer_jump(lab, core, n)


def dbscan_labels(adj: torch.Tensor, valid: torch.Tensor, min_samples: torch.Tensor,
                  loop: str = "while") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's DBSCAN labels ``[B, n]`` (int64; -1 noise and invalid slots) from a
    neighbour mask ``adj`` ``[B, n, n]`` (symmetric, self included, zero outside the valid
    points ``valid`` ``[B, n]``) and ``min_samples`` ``[B]``; also the rounds run (int64
    scalar)."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    B, n, _ = adj.shape
    core = (adj.to(torch.int32).sum(2, dtype=torch.int32) >= min_samples[:, None]) & valid
    to_core = (adj & core[:, None, :]).to(torch.int32)
    idx = torch.arange(n, dtype=torch.int32, device=adj.device)
    lab = torch.where(core, idx[None, :], n).to(torch.int32)
    R = rounds_bound(n)
    if loop == "unrolled":
        for _ in range(R):
            lab = hooking_round(lab, to_core, core)
        rounds = torch.full((), R, dtype=torch.int64, device=adj.device)
    else:
        def unfinished(i: torch.Tensor, lab: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
            return (i < R) & (lab != previous).any()

        def body(i: torch.Tensor, lab: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return i + 1, hooking_round(lab, to_core, core), lab.clone()

        start = torch.zeros((), dtype=torch.int64, device=adj.device)
        rounds, lab, _ = while_loop(unfinished, body, (start, lab, torch.full_like(lab, -1)))
    return number_clusters(lab, smallest_core_label(to_core, lab), core, valid), rounds
