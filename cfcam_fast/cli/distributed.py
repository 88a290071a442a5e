"""Running one command in several processes with ``torch.distributed`` (under ``torchrun``).

``setup`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``): with it,
the process joins a process group (NCCL on CUDA, else gloo) whose collectives give up after
``timeout_s``, and works on ``cuda:LOCAL_RANK`` (CUDA present) or the CPU; without it, the
run is one process on the ``--device`` asked for. ``Context.shard`` gives each rank a
disjoint, deterministic share of the work. A collective that fails (a rank died or hung past
the timeout) raises ``RankFailure`` naming, where it can, the ranks that stopped.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from . import argtypes

T = TypeVar("T")


class RankFailure(RuntimeError):
    """Another rank stopped (died, or did not answer within the process-group timeout)."""


def launched() -> bool:
    """Whether this process was started by torchrun (``RANK`` and ``WORLD_SIZE`` are set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@dataclass
class Context:
    """This process's place in the run: ``rank`` of ``world_size``, ``device``, and the folder
    (``markers``) where ranks leave a file when they finish, to name the ones that did not."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    grouped: bool = False
    timeout_s: float = 600.0
    markers: Path | None = None

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the one that merges, prints and shows progress)."""
        return self.rank == 0

    def shard(self, work: Sequence[T]) -> list[T]:
        """This rank's share of ``work``: the entries at positions ``i`` with
        ``i % world_size == rank``."""
        return [w for i, w in enumerate(work) if i % self.world_size == self.rank]

    def sum(self, values: Sequence[int], phase: str) -> list[int]:
        """``values`` summed over all ranks (each rank's list has the same length)."""
        if not self.grouped:
            return list(values)
        import torch.distributed as dist

        tensor = torch.tensor(list(values), dtype=torch.int64, device=self._collective_device())
        self._guard(lambda: dist.all_reduce(tensor), phase)
        return [int(v) for v in tensor.cpu()]

    def barrier(self, phase: str) -> None:
        """Wait for every rank (a ``RankFailure`` after the timeout or if one died)."""
        self.sum([0], phase)

    def finished(self) -> None:
        """Leave this rank's marker: it has done its share."""
        if self.markers is not None:
            self.markers.mkdir(parents=True, exist_ok=True)
            (self.markers / f"rank-{self.rank}.finished").touch()

    def clear_marker(self) -> None:
        """Remove this rank's marker from an earlier run."""
        if self.markers is not None:
            (self.markers / f"rank-{self.rank}.finished").unlink(missing_ok=True)

    def close(self) -> None:
        """Leave the process group (if any)."""
        if self.grouped:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.grouped = False

    def _collective_device(self) -> torch.device:
        import torch.distributed as dist

        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def _guard(self, call, phase: str) -> None:
        try:
            call()
        except Exception as exc:  # gloo and NCCL raise RuntimeError subclasses, DistBackendError, ...
            raise RankFailure(self._failure_message(phase, exc)) from exc

    def _failure_message(self, phase: str, exc: Exception) -> str:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        message = (f"rank {self.rank}: lost the other ranks during {phase} (a rank died, or did not "
                   f"answer within the {self.timeout_s:g} s process-group timeout; --timeout sets it): {first}")
        if self.markers is not None:
            missing = [r for r in range(self.world_size)
                       if r != self.rank and not (self.markers / f"rank-{r}.finished").exists()]
            if missing:
                message += f"; ranks that had not finished their share: {', '.join(map(str, missing))}"
        return message


def setup(device: str | None, timeout_s: float = 600.0, markers: Path | None = None) -> Context:
    """This process's ``Context``: under torchrun, join the process group (NCCL with CUDA, else
    gloo; ``timeout_s`` on every collective) on the local rank's device; otherwise one process
    on ``device`` (``--device``; default CUDA when present)."""
    if timeout_s <= 0:
        raise ValueError(f"the process-group timeout must be > 0 seconds, got {timeout_s:g}")
    if not launched():
        return Context(device=argtypes.device(device), timeout_s=timeout_s)
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    wanted = argtypes.device(device)
    if wanted.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                             "start at most that many processes per machine (--nproc_per_node), or use "
                             "--device cpu")
        wanted = torch.device("cuda", local_rank)
        torch.cuda.set_device(wanted)
    backend = "nccl" if wanted.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=wanted if backend == "nccl" else None)
    return Context(rank, world, local_rank, wanted, True, timeout_s, markers)
