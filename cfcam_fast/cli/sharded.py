"""The loop ``explain`` and ``evaluate`` share over a dataset, in one process or under torchrun.

The sorted items are cut into fixed batches (``dataset.plan_batches``); the batches that still
hold an image without a finished record are shared between the ranks (``Context.shard``).
A batch is always computed whole, also when only some of its images are left to do, so an
image's numbers never depend on which run, or how many processes, finished it (on the CPU
they do depend on the batch's other images at float32 rounding). Each rank appends its
records to its part file after every batch; rank 0 shows the progress of all ranks (one
``all_reduce`` of the counts per batch), merges ``results.jsonl`` at the end and removes the
part files.

The stages overlap: DataLoader workers read and decode the next batches while one is
explained (on CUDA, JPEGs are only read there and decoded on the device in batches:
``data.dataset.on_device``), and a writer thread writes a batch's files and then appends its
records while the next batch is explained, at most ``PENDING_WRITES`` batches behind. A
record is appended only after its files are written, so a run killed at any point is
finished by running it again. One-time costs (kernel compilation, autotuning, a CUDA
graph's capture) are paid by a warm-up call before the loop and reported apart from the
steady rate (``Outcome.this_run``).
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..data.dataset import Batch, ImageDataset, Item, loader, on_device, plan_batches
from .distributed import Context
from .outputs import PARTS, PartWriter, done_records, merge, remove_temporaries, write_text_atomic

CONFIG = "config.json"
PENDING_WRITES = 2  # batches the writer thread may lag behind the one being explained
# process(batch, items, wanted) -> (records for the indices in ``wanted``, readable or not;
# a function that writes their files, or None), run on the writer thread before the records
Process = Callable[[Batch, list, set], tuple[list, Callable[[], None] | None]]


@dataclass
class Outcome:
    """What a run did: ``done`` and ``failed`` in this run (all ranks), ``skipped`` (finished by
    an earlier run), ``seconds`` (rank 0's wall time, the warm-up included),
    ``warmup_seconds`` (rank 0's warm-up call: kernel compilation, autotuning, graph
    capture), ``first_batch_seconds`` (rank 0's wall time from the start until its first
    batch was explained: the warm-up, the loader's start and the first decode),
    ``first_batch_images`` (the images of every rank's first batch) and, on rank 0, the
    merged ``records``."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    warmup_seconds: float = 0.0
    first_batch_seconds: float | None = None
    first_batch_images: int = 0
    records: list = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        """Images finished in this run (done or failed) per second of wall time."""
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_images_per_second(self) -> float | None:
        """Images per second after every rank's first batch: the rate without the one-time
        costs (None when nothing came after the first batches)."""
        later = self.done + self.failed - self.first_batch_images
        if self.first_batch_seconds is None or later <= 0 or self.seconds <= self.first_batch_seconds:
            return None
        return later / (self.seconds - self.first_batch_seconds)

    def this_run(self) -> dict:
        """The ``this_run`` entry of the run's JSON summary."""
        first = None if self.first_batch_seconds is None else round(self.first_batch_seconds, 3)
        steady = self.steady_images_per_second
        return {"done": self.done, "failed": self.failed, "skipped_as_done": self.skipped,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 3),
                "warmup_seconds": round(self.warmup_seconds, 3), "first_batch_seconds": first,
                "steady_images_per_second": None if steady is None else round(steady, 3)}

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
                keep_images: bool, process: Process, command: str, config: dict, decode_on_device: bool = False,
                warm_up: Callable[[], object] | None = None) -> Outcome:
    """Run ``process`` on this rank's share of the batches not yet finished in ``out`` and, on
    rank 0, merge every rank's records into ``out/results.jsonl`` (see the module docstring).
    ``decode_on_device``: JPEGs are decoded on ``ctx.device`` (CUDA); ``warm_up``: a call
    made once before the loop, timed apart."""
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
    if warm_up is not None and mine:
        warm = time.perf_counter()
        warm_up()
        outcome.warmup_seconds = time.perf_counter() - warm
    writer = PartWriter(out, ctx.rank)
    progress = tqdm(total=len(items), initial=len(finished), desc=command, unit="image",
                    disable=not ctx.main, file=sys.stderr)
    done = failed = first_images = 0
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cfcam-writer")
    pending: deque[Future[None]] = deque()

    def finish(records: list, files: Callable[[], None] | None) -> None:
        if files is not None:
            files()
        writer.write(records)

    try:
        dataset = ImageDataset(items, size, keep_images, encoded_jpegs=decode_on_device)
        for batch in loader(dataset, mine, workers):
            batch = on_device(batch, ctx.device, size, keep_images)
            wanted = {i for i in batch.indices + [f[0] for f in batch.failures] if items[i].key not in finished}
            records, files = process(batch, items, wanted)
            pending.append(pool.submit(finish, records, files))
            while len(pending) > PENDING_WRITES:
                pending.popleft().result()  # the writer's error, if any, stops the run here
            if outcome.first_batch_seconds is None:
                outcome.first_batch_seconds = time.perf_counter() - start
                first_images = len(records)
            bad = sum("error" in r for r in records)
            done, failed = done + len(records) - bad, failed + bad
            step = ctx.sum([len(records)], "the progress count")
            progress.update(step[0])
        while pending:
            pending.popleft().result()
        for _ in range(rounds - len(mine)):  # ranks with one batch fewer still join every count
            progress.update(ctx.sum([0], "the progress count")[0])
    finally:
        pool.shutdown(wait=True)  # the batches explained so far keep their records
        writer.close()
        progress.close()
    ctx.finished()
    outcome.done, outcome.failed, outcome.first_batch_images = ctx.sum([done, failed, first_images],
                                                                       "the final count of images")
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
