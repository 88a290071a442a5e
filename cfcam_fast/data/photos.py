"""Photos the installed libraries ship (scikit-image, scikit-learn, matplotlib): the demo's
default inputs and the ``--photos`` sets, read from those libraries, never downloaded."""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image

PHOTO_SETS = ("bundled", "shipped")  # bundled_photos(), shipped_photos()


# The scikit-image photographs used by default, then every other photograph scikit-image
# ships (grey ones are shown as RGB). Left out as not photographs: binary_blobs, checkerboard,
# colorwheel, horse, logo, shepp_logan_phantom; and lfw_subset (200 face crops of 25 pixels)
# and cat (chelsea again).
_DEFAULT_SKIMAGE = ("chelsea", "astronaut", "coffee", "rocket", "stereo_motorcycle")
_MORE_SKIMAGE = ("brick", "camera", "cell", "clock", "coins", "grass", "gravel", "hubble_deep_field",
                 "immunohistochemistry", "microaneurysms", "moon", "page", "retina", "text")


def _skimage_photo(name: str) -> Image.Image:
    from skimage import data

    array = getattr(data, name)()
    if name == "stereo_motorcycle":
        array = array[0]
    return Image.fromarray(array).convert("RGB")


def _photos(skimage_names: Sequence[str], matplotlib_names: Sequence[str]) -> list[tuple[str, Image.Image]]:
    photos = []
    for name in skimage_names:
        try:
            photos.append(("motorcycle" if name == "stereo_motorcycle" else name, _skimage_photo(name)))
        except (AttributeError, ModuleNotFoundError, OSError, ValueError):
            continue  # not in the installed scikit-image, or not shipped with it (a download)
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    for filename, array in zip(sample.filenames, sample.images):
        photos.append((Path(filename).stem, Image.fromarray(array).convert("RGB")))
    for filename in matplotlib_names:
        try:
            import matplotlib

            path = Path(matplotlib.get_data_path()) / "sample_data" / filename
            with Image.open(path) as image:
                photos.append((Path(filename).stem, image.convert("RGB")))
        except (ModuleNotFoundError, OSError):
            continue
    return photos


def bundled_photos() -> list[tuple[str, Image.Image]]:
    """The RGB photos the demo and the CLI use by default, as ``(name, image)``.

    scikit-image: chelsea (a cat), astronaut, coffee, rocket, motorcycle; scikit-learn's
    ``load_sample_images``: china, flower. A photo missing from the installed version is
    skipped.
    """
    return _photos(_DEFAULT_SKIMAGE, ())


def shipped_photos() -> list[tuple[str, Image.Image]]:
    """Every photograph the installed scikit-image, scikit-learn and matplotlib ship, as
    ``(name, image)`` in RGB: scikit-image's (the five of ``bundled_photos()`` first, grey
    ones included), scikit-learn's two and matplotlib's ``grace_hopper``."""
    return _photos(_DEFAULT_SKIMAGE + _MORE_SKIMAGE, ("grace_hopper.jpg",))


@lru_cache(maxsize=len(PHOTO_SETS))
def photo_set(name: str) -> dict[str, Image.Image]:
    """The photos of set ``name`` (one of ``PHOTO_SETS``) by their names, read once per process."""
    if name not in PHOTO_SETS:
        raise ValueError(f"photos must be one of {PHOTO_SETS}, got {name!r}")
    return dict(bundled_photos() if name == "bundled" else shipped_photos())
