"""JPEG files decoded as tensors (``cfcam_fast.data.jpeg``), the path CUDA dataset runs take:
EXIF orientation as Pillow applies it, pixels within one grey level of the Pillow path, and
batches that mix JPEGs with other files and broken ones (``dataset.on_device``). torchvision
decodes on the CPU here with the decoder Pillow uses, so the tests run without a GPU; the
CUDA test compares nvJPEG with it."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from skimage import data

from cfcam_fast.data import jpeg
from cfcam_fast.data.dataset import ImageDataset, Item, collate, on_device
from cfcam_fast.data.images import load_image, preprocess

STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def _jpeg_bytes(image: Image.Image, orientation: int = 1, mode: str = "RGB") -> bytes:
    exif = Image.Exif()
    if orientation != 1:
        exif[jpeg.EXIF_ORIENTATION] = orientation
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def _tensor(data_bytes: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data_bytes), dtype=torch.uint8)


def _grey_levels(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest difference of two normalised images, in 8-bit grey levels."""
    return float(((a - b).abs() * STD * 255).max())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(orientation):
    photo = Image.fromarray(data.astronaut()).resize((48, 32))
    encoded = _jpeg_bytes(photo, orientation)
    assert jpeg.orientation(encoded) == orientation
    (decoded,) = jpeg.decode([_tensor(encoded)], torch.device("cpu"))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(encoded))).convert("RGB"))
    np.testing.assert_array_equal(decoded.permute(1, 2, 0).numpy(), expected)


@pytest.mark.parametrize("size", [64, 224, 300])
def test_pixels_are_within_one_grey_level_of_the_pillow_path(size):
    encoded = _jpeg_bytes(Image.fromarray(data.chelsea()))
    (decoded,) = jpeg.decode([_tensor(encoded)], torch.device("cpu"))
    reference = preprocess([load_image(io.BytesIO(encoded))], size)[0]
    assert _grey_levels(jpeg.to_pixels(decoded, size), reference) <= 1.0 + 1e-4


def test_broken_and_odd_files_fall_back_or_fail_alone():
    good = _jpeg_bytes(Image.fromarray(data.coffee()))
    decoded = jpeg.decode([_tensor(good), _tensor(good[: len(good) // 3]), _tensor(b"\xff\xd8\xffnot a jpeg")],
                          torch.device("cpu"))
    assert isinstance(decoded[0], torch.Tensor)
    assert all(isinstance(d, str) and d for d in decoded[1:])
    assert jpeg.is_jpeg(good) and not jpeg.is_jpeg(b"\x89PNG\r\n")
    assert jpeg.orientation(b"\xff\xd8\xff garbage") == 1


def _folder(tmp_path: Path) -> list[Item]:
    """A PNG, a JPEG, a CMYK JPEG, a truncated JPEG and a JPEG turned by EXIF."""
    photo = Image.fromarray(data.chelsea()).resize((80, 60))
    photo.save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(_jpeg_bytes(photo))
    (tmp_path / "c.jpg").write_bytes(_jpeg_bytes(photo, mode="CMYK"))
    (tmp_path / "d.jpg").write_bytes(_jpeg_bytes(photo)[:200])
    (tmp_path / "e.jpg").write_bytes(_jpeg_bytes(photo, orientation=6))
    return [Item(str(tmp_path / n), Path(n).stem) for n in ("a.png", "b.jpg", "c.jpg", "d.jpg", "e.jpg")]


def test_a_mixed_batch_decoded_as_jpegs_equals_the_cpu_batch(tmp_path):
    items = _folder(tmp_path)
    cpu = collate([ImageDataset(items, 64, keep_images=True)[i] for i in range(len(items))])
    encoded = collate([ImageDataset(items, 64, keep_images=True, encoded_jpegs=True)[i] for i in range(len(items))])
    assert [i for i, _ in encoded.encoded] == [1, 2, 3, 4] and encoded.indices == [0]
    got = on_device(encoded, torch.device("cpu"), 64, keep_images=True)
    assert got.indices == cpu.indices and [i for i, _ in got.failures] == [i for i, _ in cpu.failures] == [3]
    assert "cannot read image" in got.failures[0][1]
    assert got.pixels is not None and cpu.pixels is not None
    assert _grey_levels(got.pixels, cpu.pixels) <= 1.0 + 1e-4
    assert [np.asarray(image).shape for image in got.images] == [np.asarray(image).shape for image in cpu.images]


def test_a_batch_without_jpegs_only_moves(tmp_path):
    items = _folder(tmp_path)[:1]
    batch = collate([ImageDataset(items, 32, encoded_jpegs=True)[0]])
    assert on_device(batch, torch.device("cpu"), 32, keep_images=False) is batch


def test_explain_records_where_it_decoded(tmp_path):
    from cfcam_fast.cli import main

    items = _folder(tmp_path)
    out = tmp_path / "out"
    status = main(["explain", str(tmp_path / "b.jpg"), "--model", "resnet18", "--random-weights", "--size", "64",
                   "--no-overlays", "--workers", "0", "--out", str(out), "--device", "cpu"])
    assert status == 0 and len(items) == 5
    run = json.loads((out / "run.json").read_text())
    assert run["decode"] == "cpu" and "steady_images_per_second" in run["this_run"]
    assert run["this_run"]["warmup_seconds"] == 0.0  # no warm-up call on the CPU


@pytest.mark.gpu
def test_nvjpeg_pixels_are_close_to_the_cpu_decoder():
    encoded = [_tensor(_jpeg_bytes(Image.fromarray(image))) for image in (data.chelsea(), data.coffee())]
    on_gpu = jpeg.decode(encoded, torch.device("cuda"))
    on_cpu = jpeg.decode(encoded, torch.device("cpu"))
    for g, c in zip(on_gpu, on_cpu):
        assert isinstance(g, torch.Tensor) and isinstance(c, torch.Tensor)
        # nvJPEG's inverse DCT rounds apart from libjpeg's by a few grey levels at most.
        assert int((g.cpu().int() - c.int()).abs().max()) <= 4
        assert _grey_levels(jpeg.to_pixels(g, 224).cpu(), jpeg.to_pixels(c, 224)) <= 4.0 + 1e-4
