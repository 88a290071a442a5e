"""Dataset inputs, batches and shards, crash-safe output files and the bootstrap, in-process."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cfcam_fast.cli.distributed import Context, setup
from cfcam_fast.cli.outputs import PartWriter, done_records, merge, read_records, remove_temporaries, write_atomic
from cfcam_fast.data.dataset import (
    PHOTO_SETS,
    ImageDataset,
    Item,
    collate,
    collect,
    loader,
    parse_list_file,
    plan_batches,
    safe_name,
)
from cfcam_fast.evaluation.bootstrap import bootstrap_mean


def _png(path: Path, height: int = 12, width: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path)
    return path


def test_list_file_resolves_relative_paths_and_skips_comments_and_blank_lines(tmp_path):
    listing = tmp_path / "lists" / "images.txt"
    listing.parent.mkdir()
    listing.write_text(f"# a comment\n\n  a.png  \nsub/../b.jpg\n{tmp_path / 'c.png'}\n   # indented comment\n")
    assert parse_list_file(listing) == [listing.parent / "a.png", listing.parent / "b.jpg", tmp_path / "c.png"]
    with pytest.raises(ValueError, match="cannot read list file"):
        parse_list_file(tmp_path / "absent.txt")


def test_flat_folder_sorted_with_unique_safe_names(tmp_path):
    for name in ("b.png", "a b.png", "a b.jpg"):
        _png(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    items = collect([str(tmp_path)])
    assert [Path(i.key).name for i in items] == ["a b.jpg", "a b.png", "b.png"]
    assert [i.name for i in items] == ["a_b", "a_b_2", "b"] and all(i.label is None for i in items)


def test_imagefolder_keeps_class_folders_as_labels(tmp_path):
    _png(tmp_path / "dog" / "1.png")
    _png(tmp_path / "cat" / "deep" / "2.png")
    _png(tmp_path / "top.png")  # beside the class folders: not part of an ImageFolder
    (tmp_path / "empty").mkdir()
    items = collect([str(tmp_path)])
    assert [(i.label, i.name) for i in items] == [("cat", "cat__deep__2"), ("dog", "dog__1")]


def test_files_folders_and_list_files_together_each_file_once(tmp_path):
    a, b = _png(tmp_path / "in" / "a.png"), _png(tmp_path / "in" / "b.png")
    listing = tmp_path / "in" / "list.lst"
    listing.write_text("a.png\nmissing.png\n")
    items = collect([str(listing), str(a), str(tmp_path / "in")])
    assert [i.key for i in items] == sorted({str(a), str(b), str(tmp_path / "in" / "missing.png")})
    with pytest.raises(ValueError, match="no such file or folder"):
        collect([str(tmp_path / "nope.png")])
    (tmp_path / "hollow").mkdir()
    with pytest.raises(ValueError, match="no images in folder"):
        collect([str(tmp_path / "hollow")])


def test_the_shipped_photo_set_is_read_from_the_libraries():
    from cfcam_fast.data.dataset import read_image
    from cfcam_fast.data.photos import shipped_photos

    items = collect([], "shipped")
    assert [i.key for i in items] == sorted(f"shipped:{name}" for name, _ in shipped_photos())
    assert read_image(items[0].key).mode == "RGB"
    with pytest.raises(ValueError, match="no such file: shipped:nothing"):
        read_image("shipped:nothing")
    with pytest.raises(ValueError, match="photos must be one of"):
        collect([], "mine")


def test_no_input_is_the_bundled_photos():
    items = collect([])
    assert items and all(i.key.startswith("bundled:") for i in items) and "bundled" in PHOTO_SETS
    assert [i.key for i in items] == sorted(i.key for i in items)
    sample = ImageDataset(items[:1], size=16)[0]
    assert sample["pixels"].shape == (3, 16, 16)


def test_safe_name():
    assert safe_name("cat/001 (copy).JPG") == "cat__001__copy_"
    assert safe_name("../../x/.hidden.png") == "x__hidden"
    assert safe_name("é.png") == "_"


def test_unreadable_files_are_error_records_that_collate_sets_apart(tmp_path):
    good = _png(tmp_path / "good.png")
    (tmp_path / "bad.png").write_text("not a PNG")
    items = [Item(str(tmp_path / "bad.png"), "bad"), Item(str(good), "good"), Item(str(tmp_path / "gone.png"), "gone")]
    dataset = ImageDataset(items, size=8, keep_images=True)
    assert dataset[0]["error"].startswith("cannot read image") and "no such file" in dataset[2]["error"]
    batch = collate([dataset[i] for i in range(3)])
    assert batch.indices == [1] and batch.pixels.shape == (1, 3, 8, 8) and len(batch.images) == 1
    assert [i for i, _ in batch.failures] == [0, 2]
    assert collate([dataset[0]]).pixels is None


def test_loader_with_a_worker_process_gives_the_planned_batches(tmp_path):
    items = [Item(str(_png(tmp_path / f"{i}.png", 8 + i)), str(i)) for i in range(5)]
    plan = plan_batches(len(items), 2)
    assert plan == [[0, 1], [2, 3], [4]]
    batches = list(loader(ImageDataset(items, size=8), plan, workers=1))
    assert [b.indices for b in batches] == plan
    direct = collate([ImageDataset(items, size=8)[i] for i in range(2)])
    assert torch.equal(batches[0].pixels, direct.pixels)  # workers decode exactly as in-process
    with pytest.raises(ValueError):
        plan_batches(3, 0)


def test_shards_are_disjoint_and_cover_the_work():
    work = list(range(11))
    shards = [Context(rank=r, world_size=3).shard(work) for r in range(3)]
    assert sorted(sum(shards, [])) == work and shards[1] == [1, 4, 7, 10]


def test_setup_without_torchrun_is_one_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    ctx = setup("cpu", 5.0)
    assert (ctx.rank, ctx.world_size, ctx.grouped, ctx.device.type) == (0, 1, False, "cpu")
    assert ctx.sum([3, 4], "a count") == [3, 4]
    with pytest.raises(ValueError, match="timeout"):
        setup("cpu", 0.0)


def test_part_files_survive_a_torn_line_and_merge_dedupes_and_sorts(tmp_path):
    writer = PartWriter(tmp_path, 0)
    writer.write([{"file": "b", "class": 1}, {"file": "a", "class": 2}])
    writer.close()
    part = tmp_path / "parts" / "rank-0.jsonl"
    with part.open("a") as stream:
        stream.write('{"file": "c", "cla')  # a write cut short by a kill
    assert [r["file"] for r in read_records(part)] == ["b", "a"]
    writer = PartWriter(tmp_path, 0)  # reopening cuts the torn tail, so the next line is whole
    writer.write([{"file": "c", "class": 3}])
    writer.close()
    other = PartWriter(tmp_path, 1)
    other.write([{"file": "a", "class": 2}, {"file": "z", "class": 9}])  # "a" twice; "z" not asked for
    other.close()
    assert set(done_records(tmp_path)) == {"a", "b", "c", "z"}
    records = merge(tmp_path, ["c", "a", "b"])
    assert [r["file"] for r in records] == ["a", "b", "c"]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records


def test_atomic_writes_leave_nothing_behind_on_an_error(tmp_path):
    target = tmp_path / "x.npy"
    write_atomic(target, lambda stream: stream.write(b"old"))

    def fail(stream):
        stream.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomic(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.npy"]
    (tmp_path / ".y.npy.abc.tmp").write_bytes(b"left by a kill")
    remove_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]


def test_bootstrap_is_the_percentile_interval_of_resampled_means():
    values = [0.5, 1.0, 4.0, 2.0, math.nan, 3.5]
    interval = bootstrap_mean(values, resamples=1000, seed=7)
    finite = np.array([0.5, 1.0, 4.0, 2.0, 3.5])
    rng = np.random.default_rng(7)
    means = finite[rng.integers(0, 5, size=(1000, 5))].mean(1)
    # The same draws from the same seed: equal to the last bit.
    assert (interval.low, interval.high) == tuple(np.quantile(means, [0.025, 0.975]))
    assert interval.mean == finite.mean() and interval.n == 5
    assert interval.low <= interval.mean <= interval.high
    assert bootstrap_mean(values, seed=7) == interval  # fixed seed: reproducible
    assert bootstrap_mean([2.0] * 4) == (2.0, 2.0, 2.0, 4)
    assert math.isnan(bootstrap_mean([math.nan]).mean) and bootstrap_mean([]).n == 0
    with pytest.raises(ValueError):
        bootstrap_mean(values, level=1.0)
