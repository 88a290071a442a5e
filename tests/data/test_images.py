"""``data.images``: photos in every common format (EXIF orientation, transparency, 16-bit,
palette, grey, CMYK; made here with Pillow) load as a viewer shows them; preprocessing and
unreadable files."""
import numpy as np
import pytest
import torch
from helpers import GOOD_IMAGES, cat_photo, write_awkward_images
from PIL import Image

from cfcam_fast.cams.imagenet import IMAGENET_MEAN, IMAGENET_STD
from cfcam_fast.data import images
from cfcam_fast.data import photos as photo_sets
from cfcam_fast.data.images import ALPHA_BACKGROUND, load_image


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The six good images, one per awkward format, and two broken files (helpers)."""
    return write_awkward_images(tmp_path_factory.mktemp("mixed"))


def test_every_format_loads_as_a_viewer_shows_it(folder):
    loaded = {p.stem: load_image(p) for p in folder.iterdir() if p.stem in GOOD_IMAGES}
    assert all(image.mode == "RGB" for image in loaded.values())
    assert loaded["a_phone"].size == (64, 96)  # stored 96 x 64, turned upright by its EXIF tag
    assert {loaded[name].size for name in GOOD_IMAGES[1:]} == {(96, 64)}
    # Orientation 6: the stored top row becomes the right-hand column.
    stored = np.asarray(cat_photo()).astype(int)
    shown = np.asarray(loaded["a_phone"]).astype(int)
    assert np.abs(shown[:, -1] - stored[0]).mean() < 12 and np.abs(shown[:, 0] - stored[0]).mean() > 20
    # Transparent (left) pixels are on white; opaque (right) ones keep their colour.
    rgba = np.asarray(loaded["b_rgba"]).astype(int)
    assert (rgba[:, 0] == ALPHA_BACKGROUND).all()
    assert np.abs(rgba[:, -1] - stored[:, -1]).max() <= 1
    gray = np.asarray(cat_photo().convert("L")).astype(int)
    np.testing.assert_allclose(np.asarray(loaded["c_16bit"])[..., 0], gray, atol=1)  # not clipped to white
    assert np.abs(np.asarray(loaded["f_cmyk"]).astype(int) - stored).mean() < 12  # colours kept


def test_preprocess_and_load_image(tmp_path):
    photos = dict(photo_sets.bundled_photos())
    x = images.preprocess([photos["chelsea"], photos["china"]], size=64)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    white = images.preprocess([Image.new("RGB", (10, 7), (255, 255, 255))], size=8)
    expected = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    # 1e-6: float32 rounding of (1 - mean) / std.
    torch.testing.assert_close(white[0, :, 3, 3], expected, atol=1e-6, rtol=0)
    good = tmp_path / "gray.png"
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(good)
    assert images.load_image(good).mode == "RGB"
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"no pixels here")
    with pytest.raises(ValueError, match="cannot read image .*bad.jpg"):
        images.load_image(bad)
