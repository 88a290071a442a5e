"""The overlay helper cfcam_fast.viz."""
import numpy as np
import pytest
import torch
from PIL import Image

from cfcam_fast import viz


def test_overlay_shape_dtype_and_resizing():
    image = Image.fromarray(np.random.randint(0, 256, (30, 45, 3), dtype=np.uint8))
    cam = torch.rand(7, 7)
    for source in (image, np.asarray(image), torch.from_numpy(np.array(image)).permute(2, 0, 1) / 255.0):
        out = viz.overlay(source, cam)
        assert out.shape == (30, 45, 3) and out.dtype == np.uint8
    gray = viz.overlay(np.zeros((12, 10), np.float32), cam.numpy())
    assert gray.shape == (12, 10, 3) and gray.dtype == np.uint8


def test_overlay_blends_image_and_colormap():
    pixels = np.random.randint(0, 256, (8, 8, 3), dtype=np.uint8)
    cam = torch.rand(4, 4)
    assert np.array_equal(viz.overlay(pixels, cam, alpha=0.0), pixels)
    import matplotlib

    hot = viz.overlay(pixels, torch.ones(4, 4), alpha=1.0, colormap="viridis")
    expected = np.round(np.array(matplotlib.colormaps["viridis"](1.0)[:3]) * 255)
    assert np.array_equal(hot[0, 0], expected.astype(np.uint8))
    half = viz.overlay(pixels, torch.full((4, 4), 0.25), alpha=0.5).astype(float)
    jet = np.array(matplotlib.colormaps["jet"](0.25)[:3]) * 255
    # atol 1: one grey level, the rounding of the blend to uint8.
    np.testing.assert_allclose(half, 0.5 * pixels + 0.5 * jet, atol=1.0)


def test_overlay_rejects_bad_input():
    pixels = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        viz.overlay(pixels, torch.full((4, 4), 2.0))
    with pytest.raises(ValueError, match=r"one \[H, W\] map"):
        viz.overlay(pixels, torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match="colormap"):
        viz.overlay(pixels, torch.rand(4, 4), colormap="no_such_map")
    with pytest.raises(ValueError, match="floating-point image"):
        viz.overlay(np.full((8, 8, 3), 3.0), torch.rand(4, 4))


def test_save_overlay_writes_a_png(tmp_path):
    path = tmp_path / "x.png"
    viz.save_overlay(path, Image.new("RGB", (40, 30), (10, 200, 30)), torch.rand(5, 5), "tabby (12.3%)")
    with Image.open(path) as written:
        assert written.format == "PNG" and written.size[0] > 0


def test_save_overlay_adds_a_colour_bar_and_a_caption(tmp_path):
    image, cam = Image.new("RGB", (40, 30), (10, 200, 30)), torch.rand(5, 5)
    viz.save_overlay(tmp_path / "plain.png", image, cam, "tabby")
    viz.save_overlay(tmp_path / "annotated.png", image, cam, "tabby", colorbar=True,
                     caption="CF-CAM, gaussian filter, softmax weighting; layer bn2")
    with Image.open(tmp_path / "plain.png") as plain, Image.open(tmp_path / "annotated.png") as annotated:
        before, pixels = np.asarray(plain.convert("RGB")), np.asarray(annotated.convert("RGB")).astype(int)
    (h0, w0), (h1, w1) = before.shape[:2], pixels.shape[:2]
    # 0.9 inch of colour bar and 0.4 inch of caption at 100 dpi; the image part is unchanged.
    assert (w1 - w0, h1 - h0) == (90, 40)
    assert np.array_equal(before[60, 100], pixels[60, 100])
    bar = pixels[60:h0 - 20, w0 + 20]  # a column through the bar: jet from red (top) to blue (bottom)
    assert bar[0, 0] > 100 > bar[0, 2] and bar[-1, 2] > 100 > bar[-1, 0]
