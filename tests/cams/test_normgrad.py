"""NormGrad (``cams.normgrad``) against a NumPy computation of its definition."""
import cv2
import numpy as np
import torch
from helpers import images, tiny_cnn

from cfcam_fast import NormGrad
from cfcam_fast.cams.capture import capture


def test_normgrad_equals_numpy_definition():
    model, x = tiny_cnn(), images(batch=3)
    res = NormGrad(model, [model.features]).explain(x, [1, 2, 0])
    captured = capture(model, x, [model.features], [1, 2, 0])
    A, G = captured.activations[0].numpy().astype(np.float64), captured.gradients[0].numpy().astype(np.float64)
    cam = np.sqrt((A ** 2).sum(1)) * np.sqrt((G ** 2).sum(1))  # ||A_u||_2 ||G_u||_2 per position u
    up = np.stack([cv2.resize(m, (16, 16), interpolation=cv2.INTER_LINEAR) for m in cam])
    expected = up / up.reshape(3, -1).max(1)[:, None, None]
    # Same float64 formula, maps rounded to float32 at the end: 1e-6 on [0, 1] maps.
    np.testing.assert_allclose(res.maps.numpy(), expected, atol=1e-6)
    assert bool(torch.isnan(res.weights).all()) and bool(torch.isnan(res.channel_weights).all())
