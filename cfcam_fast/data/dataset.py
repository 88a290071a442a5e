"""Image datasets for the command line: what to read, and reading it in DataLoader workers.

Inputs (``collect``): image files; folders, either flat (every image inside, sorted) or in
the ImageFolder layout (one sub-folder per class, its name kept as the image's ``label``);
list files (``.txt``, ``.lst``, ``.list``: one image path per line, relative paths resolved
against the list file's folder, blank lines and lines starting with ``#`` ignored); no input
at all: a set of photos the installed libraries ship (``PHOTO_SETS``: ``bundled``, the
demo's, or ``shipped``, every one), read from those libraries, never written to disk. The
items come back sorted by ``key`` (the path as given or resolved, or ``<set>:<name>``), each
once, so every process of a sharded run sees the same list.

Reading (``ImageDataset``, ``collate``, ``loader``): a worker decodes and preprocesses one
image per ``__getitem__``; a file that cannot be read comes back as an error record instead
of raising, and ``collate`` separates those from the images, so one bad file never stops a
run. Batches are fixed lists of item indices (``plan_batches``), so a batch holds the same
images however many processes share the work.
"""
from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from . import jpeg
from .images import load_image, preprocess
from .photos import PHOTO_SETS, photo_set

LIST_SUFFIXES = (".txt", ".lst", ".list")


@dataclass(frozen=True)
class Item:
    """One image to read: ``key`` (its path, or ``bundled:<name>``; unique in a dataset),
    ``name`` (unique, filesystem-safe output stem) and ``label`` (ImageFolder class or None)."""

    key: str
    name: str
    label: str | None = None


def image_extensions() -> set[str]:
    """Lower-case file suffixes Pillow can open (``.png``, ``.jpg``, ...)."""
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def parse_list_file(path: str | Path) -> list[Path]:
    """The image paths in list file ``path``: one per line, relative ones resolved against the
    file's folder (``..`` folded away, links kept); blank lines and ``#`` comments skipped.
    ``ValueError`` if it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read list file {path}: {exc}") from None
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entry = Path(line).expanduser()
            found.append(Path(os.path.normpath(entry if entry.is_absolute() else path.parent / entry)))
    return found


def safe_name(relative: str) -> str:
    """A filesystem-safe stem for an image at ``relative`` (a path inside its dataset): suffix
    dropped, folders joined with ``__``, characters other than letters, digits, ``.``, ``_``
    and ``-`` replaced by ``_``, leading dots removed (no hidden files)."""
    parts = [re.sub(r"[^A-Za-z0-9._-]", "_", p).lstrip(".") for p in Path(relative).with_suffix("").parts
             if p not in ("/", "..", ".")]
    return "__".join(p for p in parts if p) or "image"


def _folder_entries(folder: Path, extensions: set[str]) -> list[tuple[Path, str, str | None]]:
    """(file, path relative to ``folder``, label) for a flat or ImageFolder-layout folder."""
    def images(where: Path, recursive: bool) -> list[Path]:
        walk = where.rglob("*") if recursive else where.iterdir()
        return sorted(p for p in walk if p.is_file() and p.suffix.lower() in extensions)

    classes = sorted(p for p in folder.iterdir() if p.is_dir() and images(p, True))
    if classes:  # ImageFolder: images anywhere below a class folder carry its name
        return [(p, str(p.relative_to(folder)), c.name) for c in classes for p in images(c, True)]
    return [(p, p.name, None) for p in images(folder, False)]


def collect(paths: Sequence[str], photos: str = "bundled") -> list[Item]:
    """The items to read for command-line ``paths`` (see the module docstring), sorted by key;
    with no paths, the photo set ``photos`` (one of ``PHOTO_SETS``).

    ``ValueError`` for a path that does not exist or a folder without images. A path inside
    a list file that does not exist is kept: reading it fails and is recorded for that image.
    """
    if not paths:
        if photos not in PHOTO_SETS:
            raise ValueError(f"photos must be one of {PHOTO_SETS}, got {photos!r}")
        return sorted((Item(f"{photos}:{name}", safe_name(name)) for name in photo_set(photos)),
                      key=lambda item: item.key)
    extensions = image_extensions()
    entries: dict[str, tuple[str, str | None]] = {}  # key -> (relative path, label)
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = _folder_entries(path, extensions)
            if not found:
                raise ValueError(f"no images in folder {text}")
            for file, relative, label in found:
                entries.setdefault(str(file), (relative, label))
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            listed = parse_list_file(path)
            if not listed:
                raise ValueError(f"list file {text} names no images")
            for file in listed:
                try:
                    relative = str(file.relative_to(path.parent))
                except ValueError:
                    relative = str(file)
                entries.setdefault(str(file), (relative, None))
        elif path.exists():
            entries.setdefault(str(path), (path.name, None))
        else:
            raise ValueError(f"no such file or folder: {text}")
    used: set[str] = set()
    return [Item(key, unique_name(safe_name(entries[key][0]), used), entries[key][1]) for key in sorted(entries)]


def unique_name(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3``, ... if taken: the first name not in ``used``,
    which is added to it."""
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}_{n}"
    used.add(name)
    return name


def read_image(key: str):
    """The RGB image behind item key ``key``; ``ValueError`` naming the reason if unreadable."""
    prefix, _, name = key.partition(":")
    if prefix in PHOTO_SETS and not Path(key).is_file() and name in photo_set(prefix):
        return photo_set(prefix)[name]
    if not Path(key).is_file():
        raise ValueError(f"no such file: {key}")
    return load_image(key)


class ImageDataset(Dataset):
    """``items`` read and preprocessed to ``size`` x ``size`` (``images.preprocess``).

    ``dataset[i]`` is ``{"index": i, "pixels": [3, size, size] float32}`` plus ``"image"``
    (the RGB image as read) when ``keep_images``; for an unreadable file it is
    ``{"index": i, "error": reason}`` instead of an exception. With ``encoded_jpegs``, a
    JPEG file is only read: ``{"index": i, "jpeg": its bytes as a uint8 tensor}``, for
    ``on_device`` to decode on the GPU.
    """

    def __init__(self, items: Sequence[Item], size: int = 224, keep_images: bool = False,
                 encoded_jpegs: bool = False):
        self.items, self.size, self.keep_images = list(items), size, keep_images
        self.encoded_jpegs = encoded_jpegs

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        key = self.items[index].key
        if self.encoded_jpegs and Path(key).is_file():
            try:
                data = Path(key).read_bytes()
            except OSError as exc:
                return {"index": index, "error": f"cannot read image: {exc}"}
            if jpeg.is_jpeg(data):
                return {"index": index, "jpeg": torch.frombuffer(bytearray(data), dtype=torch.uint8)}
        try:
            image = read_image(self.items[index].key)
        except ValueError as exc:
            return {"index": index, "error": f"cannot read image: {exc.__cause__ or exc}"}
        sample = {"index": index, "pixels": preprocess([image], self.size)[0]}
        if self.keep_images:
            sample["image"] = image
        return sample


@dataclass
class Batch:
    """A collated batch: the readable images' ``indices``, ``pixels`` (``[B, 3, S, S]``, or
    None when none was readable) and ``images`` (as read, if kept), ``failures``
    (``(index, reason)`` per unreadable file) and ``encoded`` (``(index, bytes)`` per JPEG
    left for ``on_device`` to decode; ``indices`` and ``pixels`` do not hold those yet)."""

    indices: list[int] = field(default_factory=list)
    pixels: torch.Tensor | None = None
    images: list = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    encoded: list[tuple[int, torch.Tensor]] = field(default_factory=list)


def collate(samples: Sequence[dict]) -> Batch:
    """``ImageDataset`` samples as one ``Batch``, error records set apart in ``failures``."""
    batch = Batch()
    good = []
    for sample in samples:
        if "error" in sample:
            batch.failures.append((sample["index"], sample["error"]))
        elif "jpeg" in sample:
            batch.encoded.append((sample["index"], sample["jpeg"]))
        else:
            good.append(sample)
    batch.indices = [s["index"] for s in good]
    batch.images = [s["image"] for s in good if "image" in s]
    if good:
        batch.pixels = torch.stack([s["pixels"] for s in good])
    return batch


def on_device(batch: Batch, device: torch.device, size: int, keep_images: bool) -> Batch:
    """``batch`` with every image's pixels on ``device``, in index order: the JPEGs it holds
    encoded decoded there (``jpeg.decode``; one the GPU decoder refuses is decoded on the CPU
    instead, and one nobody can decode becomes a failure). Kept images of decoded JPEGs are
    ``[H, W, 3]`` uint8 arrays."""
    if not batch.encoded:
        if batch.pixels is not None:
            batch.pixels = batch.pixels.to(device, non_blocking=True)
        return batch
    pixels: dict[int, torch.Tensor] = {}
    images: dict[int, object] = {}
    failures = list(batch.failures)
    decoded = jpeg.decode([data for _, data in batch.encoded], device)
    for (index, data), image in zip(batch.encoded, decoded):
        if isinstance(image, torch.Tensor):
            pixels[index] = jpeg.to_pixels(image, size)
            if keep_images:
                images[index] = image.permute(1, 2, 0).cpu().numpy()
            continue
        try:  # the GPU decoder refused it: Pillow may still read it (CMYK, say)
            opened = load_image(io.BytesIO(data.numpy().tobytes()))
        except ValueError as exc:
            failures.append((index, f"cannot read image: {exc.__cause__ or exc}"))
            continue
        pixels[index] = preprocess([opened], size)[0].to(device)
        if keep_images:
            images[index] = opened
    if batch.pixels is not None:  # the images decoded on the CPU (collate stacked them in order)
        for row, index in enumerate(batch.indices):
            pixels[index] = batch.pixels[row].to(device, non_blocking=True)
            if keep_images:
                images[index] = batch.images[row]
    order = sorted(pixels)
    return Batch(indices=order, pixels=torch.stack([pixels[i] for i in order]) if order else None,
                 images=[images[i] for i in order] if keep_images else [], failures=sorted(failures))


def plan_batches(count: int, batch_size: int) -> list[list[int]]:
    """Item indices ``0 .. count - 1`` in consecutive batches of ``batch_size`` (the last may be
    shorter): the fixed unit of work, whatever the number of processes."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


def loader(dataset: ImageDataset, batches: Sequence[Sequence[int]], workers: int) -> DataLoader[Batch]:
    """A DataLoader over ``batches`` (lists of indices) of ``dataset``, decoding in ``workers``
    worker processes (0: in this process) two batches ahead, collated by ``collate``."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    return DataLoader(dataset, batch_sampler=[list(b) for b in batches], collate_fn=collate,
                      num_workers=workers, prefetch_factor=2 if workers else None)
