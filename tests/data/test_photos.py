"""``data.photos``: the bundled photos and the larger shipped set, read from the libraries."""
from cfcam_fast.data import photos as photo_sets


def test_bundled_photos():
    photos = dict(photo_sets.bundled_photos())
    assert {"chelsea", "astronaut", "coffee", "rocket", "china", "flower"} <= set(photos)
    assert all(image.mode == "RGB" for image in photos.values())


def test_shipped_photos_extend_the_bundled_ones():
    bundled = [name for name, _ in photo_sets.bundled_photos()]
    shipped = photo_sets.shipped_photos()
    names = [name for name, _ in shipped]
    assert len(names) == len(set(names)) and set(bundled) <= set(names)
    assert {"grace_hopper", "camera", "retina"} <= set(names)  # matplotlib's photo, a grey one, a large one
    assert all(image.mode == "RGB" and min(image.size) >= 100 for _, image in shipped)
