"""``data.dataset``, in-process: the inputs (list files, folders, ImageFolders, the photo sets),
safe names, unreadable files as error records, and batches through a loader with a worker
process."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
