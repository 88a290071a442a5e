"""DBSCAN labelling in batched, dense PyTorch (any device).

Core points by neighbour count, connected components of core points by min-label
propagation with pointer jumping, border points to the smallest adjacent cluster, and
clusters numbered by their smallest core index: scikit-learn's labels exactly
(docs/exactness.md, "scikit-learn's DBSCAN in data-parallel form").
"""
from __future__ import annotations

import torch

# Propagation rounds run between two convergence checks (each check is a host sync).
ROUNDS_PER_CHECK = 2


def dbscan_labels(dist: torch.Tensor, counts: torch.Tensor, eps: torch.Tensor,
                  min_samples: torch.Tensor) -> torch.Tensor:
    """Labels ``[B, n]`` of each image's first ``counts[b]`` points (the rest get -1).

    ``dist`` ``[B, n, n]`` distances (upper triangle read), ``eps`` ``[B]``, ``min_samples``
    ``[B]``; a point's neighbourhood is every valid point at distance ``<= eps``, itself
    included.
    """
    adj, valid = _neighbours(dist, counts, eps)
    core = (adj.sum(2) >= min_samples[:, None]) & valid
    return _label(adj, valid, core)


def labels_from_core(dist: torch.Tensor, counts: torch.Tensor, eps: torch.Tensor,
                     core: torch.Tensor) -> torch.Tensor:
    """Like ``dbscan_labels`` with the core points given (``[B, n]`` bool)."""
    adj, valid = _neighbours(dist, counts, eps)
    return _label(adj, valid, core & valid)


def _neighbours(dist, counts, eps):
    """Neighbour masks from the upper triangle of ``dist`` (mirrored), self included."""
    n = dist.shape[1]
    valid = torch.arange(n, device=dist.device)[None, :] < counts[:, None]
    adj = (dist <= eps.to(dist.dtype)[:, None, None]).triu_(1)
    adj |= adj.transpose(1, 2).clone()
    adj.diagonal(dim1=1, dim2=2).fill_(True)
    adj &= valid[:, :, None] & valid[:, None, :]
    return adj, valid


def _label(adj, valid, core):
    n = adj.shape[1]
    idx = torch.arange(n, device=adj.device)
    to_core = adj & core[:, None, :]
    big = n
    lab = torch.where(core, idx.to(torch.int32)[None, :], big)
    while True:
        previous = lab
        for _ in range(ROUNDS_PER_CHECK):
            lab = _propagate(to_core, core, lab, big)
        if torch.equal(lab, previous):
            break
    return number_clusters(lab, min_neighbour_label(to_core, lab, n), core, valid)


def number_clusters(lab: torch.Tensor, smallest: torch.Tensor, core: torch.Tensor,
                    valid: torch.Tensor) -> torch.Tensor:
    """scikit-learn's labels ``[B, n]`` once every component of core points is a star whose
    root is its smallest index (``lab[i]`` that root for core points, ``n`` elsewhere;
    ``smallest``: each point's smallest core-neighbour label, ``min_neighbour_label``): a
    border point joins the smallest adjacent cluster, clusters are numbered by their
    smallest core index, the rest is noise (-1). Steps 3 and 4 of docs/exactness.md's
    data-parallel DBSCAN; no data-dependent shape."""
    n = lab.shape[1]
    idx = torch.arange(n, device=lab.device)
    roots = core & (lab == idx[None, :])
    rank = torch.cumsum(roots.to(torch.int64), 1) - 1
    cluster = torch.where(core, lab, smallest)
    found = valid & (cluster < n)
    return torch.where(found, rank.gather(1, cluster.clamp(max=n - 1).long()), -1)


def min_neighbour_label(to_core: torch.Tensor, lab: torch.Tensor, big: int) -> torch.Tensor:
    """For each point, the smallest label among its core neighbours (``big`` if none)."""
    return torch.where(to_core, lab[:, None, :], big).amin(2)


def _propagate(to_core: torch.Tensor, core: torch.Tensor, lab: torch.Tensor, big: int) -> torch.Tensor:
    """One round: every core point and its root take the smallest label in reach, then
    labels jump to their roots until they point at themselves."""
    n = lab.shape[1]
    seen = torch.where(core, min_neighbour_label(to_core, lab, big), big)
    lab = torch.minimum(lab, seen)
    # Hook: a root takes the smallest label any member of its tree has seen.
    lab = lab.scatter_reduce(1, lab.clamp(max=n - 1).long(), seen, reduce="amin", include_self=True)
    return pointer_jump(lab, core, big)


def pointer_jump(lab: torch.Tensor, core: torch.Tensor, big: int) -> torch.Tensor:
    """Pointer jumping: replace each label by its label's label until it is a fixed point."""
    n = lab.shape[1]
    for _ in range(max(1, n.bit_length())):
        nxt = torch.where(core, lab.gather(1, lab.clamp(max=n - 1).long()), big)
        lab = torch.minimum(lab, nxt)
    return lab
