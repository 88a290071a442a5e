"""The drop-in CF-CAM classes inside the grad-cam and torchcam call patterns."""
from functools import partial

import numpy as np
import pytest
import torch
from helpers import images, tiny_cnn

import cfcam_fast.metrics as metrics
from cfcam_fast.cams.cfcam import CFCAM
from cfcam_fast.core.config import CFCAMConfig

CONFIGS = [CFCAMConfig(), CFCAMConfig(filter="official", weighting="standardized")]


@pytest.mark.parametrize("config", CONFIGS)
def test_grad_cam_package_pattern(config):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

    from cfcam_fast.integrations.grad_cam import CFCAM as GradCamCFCAM

    model, x = tiny_cnn(), images(batch=2)
    with CFCAM(model, [model.features], config=config, backend="reference") as cam:
        expected = cam(x, [2, 4])
    with GradCamCFCAM(model=model, target_layers=[model.features], config=config, backend="reference") as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(2), ClassifierOutputTarget(4)])
        assert cam(input_tensor=x, targets=None).shape == (2, 16, 16)
    assert isinstance(maps, np.ndarray) and maps.shape == (2, 16, 16) and maps.dtype == np.float32
    # The same core on the same captured tensors (grad-cam backpropagates with .backward()
    # instead of autograd.grad: identical float32 operations), so equal to float32 rounding.
    np.testing.assert_allclose(maps, expected.numpy(), atol=1e-6)
    rgb = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    overlay = show_cam_on_image(rgb, maps[0], use_rgb=True)
    assert overlay.shape == (16, 16, 3) and overlay.dtype == np.uint8
    # Its metrics take our maps as they take its own.
    change = CamMultImageConfidenceChange()(x, maps, [ClassifierOutputSoftmaxTarget(k) for k in (2, 4)], model)
    drop = metrics.average_drop(model, x, torch.from_numpy(maps), [2, 4])
    clean = torch.softmax(model(x), 1)[torch.arange(2), torch.tensor([2, 4])].detach()
    # Their change is O - Y; ours 100 max(0, Y - O) / Y. 1e-6: float32 probabilities.
    np.testing.assert_allclose(drop.numpy() * clean.numpy() / 100, np.maximum(-change, 0), atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS)
def test_torchcam_pattern(config):
    pytest.importorskip("torchcam")
    from torchcam.metrics import ClassificationMetric

    from cfcam_fast.integrations.torchcam import CFCAM as TorchcamCFCAM

    model, x = tiny_cnn().eval(), images(batch=2)  # torchcam's pattern: the user runs the model in eval mode
    expected = CFCAM(model, [model.features], config=config, backend="reference")(x, [1, 3])
    # upsample=True: input-sized maps, cfcam_fast.CFCAM's (the default is the layer's size).
    with TorchcamCFCAM(model, "features", config=config, backend="reference", upsample=True) as extractor:
        out = model(x)
        cams = extractor([1, 3], out)
        assert len(cams) == 1 and cams[0].shape == (2, 16, 16)
        # Same captured tensors and the same core; 1e-6 covers float32 rounding.
        assert torch.allclose(cams[0], expected, atol=1e-6)
        assert torch.allclose(extractor(3, model(x[1:]))[0], expected[1:], atol=1e-6)
        with pytest.raises(ValueError, match="normalised"):
            extractor(3, model(x), normalized=False)
        # torchcam's metric explains the scores its logits_fn gives (here probabilities).
        softmax = partial(torch.softmax, dim=-1)
        prob_maps = extractor([1, 3], softmax(model(x)))[0]
        metric = ClassificationMetric(extractor, softmax)
        metric.update(x, [1, 3])
        summary = metric.summary()
    assert len(model._forward_pre_hooks) == 0 and len(model.features._forward_hooks) == 0
    drop = metrics.average_drop(model, x, prob_maps, [1, 3])
    # torchcam divides by (Y + 1e-7) and averages: 1e-5 relative.
    assert drop.mean().item() / 100 == pytest.approx(summary["avg_drop"], rel=1e-5, abs=1e-7)
