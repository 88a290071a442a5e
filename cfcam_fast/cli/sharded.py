"""The loop ``explain`` and ``evaluate`` share over a dataset, in one process or under torchrun.

The sorted items are cut into fixed batches (``dataset.plan_batches``); the batches that still
hold an image without a finished record are shared between the ranks (``Context.shard``).
A batch is always computed whole, also when only some of its images are left to do, so an
image's numbers never depend on which run, or how many processes, finished it (on the CPU
they do depend on the batch's other images at float32 rounding). Each rank appends its
records to its part file after every batch; rank 0 shows the progress of all ranks (one
``all_reduce`` of the counts per batch), merges ``results.jsonl`` at the end and removes the
part files.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..data.dataset import Batch, ImageDataset, Item, loader, plan_batches
from .distributed import Context
from .outputs import PARTS, PartWriter, done_records, merge, remove_temporaries, write_text_atomic

CONFIG = "config.json"
# process(batch, items, wanted) -> records for the indices in ``wanted`` (readable or not)
Process = Callable[[Batch, list, set], list]


@dataclass
class Outcome:
    """What a run did: ``done`` and ``failed`` in this run (all ranks), ``skipped`` (finished by
    an earlier run), ``seconds`` (rank 0's wall time), ``first_batch_seconds`` (rank 0's wall
    time until its first batch was written: the loader's start, the first decode and every
    one-time cost of the first call, such as kernel compilation) and, on rank 0, the merged
    ``records``."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    first_batch_seconds: float | None = None
    records: list = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Images finished in this run (done or failed) per second of wall time."""
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def this_run(self) -> dict:
        """The ``this_run`` entry of the run's JSON summary."""
        first = None if self.first_batch_seconds is None else round(self.first_batch_seconds, 3)
        return {"done": self.done, "failed": self.failed, "skipped_as_done": self.skipped,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 3),
                "first_batch_seconds": first}

    def line(self, command: str) -> str:
        """The closing line: the counts of this run."""
        return (f"{command}: {self.done} done, {self.skipped} skipped as already done, {self.failed} failed "
                f"({self.images_per_second:.2f} images/s)")


def run_command(device: str | None, timeout: float, out: Path,
                body: Callable[[Context, Path], int]) -> int:
    """``body(ctx, out)`` in this process's share of the run (one process, or a rank under
    torchrun): sets up the process group, turns the death of another rank into one line on
    stderr and exit status 1, and closes the group whatever happens."""
    from .distributed import RankFailure, setup

    ctx = setup(device, timeout, out / PARTS)
    try:
        return body(ctx, out)
    except RankFailure as exc:  # another rank died: one line naming it, no traceback
        print(f"cfcam-fast: error: {exc}", file=sys.stderr)
        return 1
    finally:
        ctx.close()


def failure_record(item: Item, reason: str) -> dict:
    """The record of an image that could not be read or explained; reported on stderr."""
    from tqdm import tqdm

    tqdm.write(f"cfcam-fast: skipped {item.key}: {reason}", file=sys.stderr)
    return {**base_record(item), "error": reason}


def base_record(item: Item) -> dict:
    """The fields every record of ``item`` starts with: ``file`` and, for an ImageFolder, ``label``."""
    return {"file": item.key, **({"label": item.label} if item.label is not None else {})}


def check_config(out: Path, config: dict, ctx: Context) -> None:
    """Refuse to resume into ``out`` if it holds results made with other options; rank 0
    records ``config`` there for the next run."""
    path = out / CONFIG
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError:
            stored = None
        if stored is not None and stored != config:
            changed = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
            raise ValueError(f"{out} holds results made with other options ({', '.join(changed)} differ); "
                             f"give another --out, or remove {out}")
    elif ctx.main:
        write_text_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def run_dataset(ctx: Context, items: list[Item], out: Path, *, batch_size: int, size: int, workers: int,
                keep_images: bool, process: Process, command: str, config: dict) -> Outcome:
    """Run ``process`` on this rank's share of the batches not yet finished in ``out`` and, on
    rank 0, merge every rank's records into ``out/results.jsonl`` (see the module docstring)."""
    from tqdm import tqdm

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    if ctx.main:
        remove_temporaries(out)
    check_config(out, config, ctx)
    keys = {item.key for item in items}
    finished = {k for k in done_records(out) if k in keys}
    ctx.barrier("the start (reading earlier results)")  # nobody appends before everyone has read
    ctx.clear_marker()
    todo = [b for b in plan_batches(len(items), batch_size) if any(items[i].key not in finished for i in b)]
    mine = ctx.shard(todo)
    rounds = math.ceil(len(todo) / ctx.world_size)
    outcome = Outcome(skipped=len(finished))
    writer = PartWriter(out, ctx.rank)
    progress = tqdm(total=len(items), initial=len(finished), desc=command, unit="image",
                    disable=not ctx.main, file=sys.stderr)
    done = failed = 0
    try:
        batches = loader(ImageDataset(items, size, keep_images), mine, workers)
        for batch in batches:
            wanted = {i for i in batch.indices + [f[0] for f in batch.failures] if items[i].key not in finished}
            records = process(batch, items, wanted)
            writer.write(records)
            if outcome.first_batch_seconds is None:
                outcome.first_batch_seconds = time.perf_counter() - start
            bad = sum("error" in r for r in records)
            done, failed = done + len(records) - bad, failed + bad
            step = ctx.sum([len(records)], "the progress count")
            progress.update(step[0])
        for _ in range(rounds - len(mine)):  # ranks with one batch fewer still join every count
            progress.update(ctx.sum([0], "the progress count")[0])
    finally:
        writer.close()
        progress.close()
    ctx.finished()
    outcome.done, outcome.failed = ctx.sum([done, failed], "the final count of images")
    if ctx.main:
        outcome.records = merge(out, list(keys))
        shutil.rmtree(out / PARTS, ignore_errors=True)
    outcome.seconds = time.perf_counter() - start
    return outcome


def write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """``rows`` as a CSV file with columns ``fields`` (missing values empty), atomically."""
    import csv
    import io

    text = io.StringIO()
    writer = csv.DictWriter(text, fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())
