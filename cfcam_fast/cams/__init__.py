"""CAMs on a model: capture of a target layer's activations and gradients, one base class
(``base.BaseCAM``), CF-CAM and the methods it is compared with (Grad-CAM, Grad-CAM++,
NormGrad, EigenCAM, Score-CAM, Smooth Grad-CAM++), the real-time frame
(``realtime.RealtimeCFCAM``) with its forward-only head shortcut (``head``) and its export
as an ONNX model or an AOTInductor package (``export``), and what every call does to a
model and undoes (``model_state``).

May import ``core``; never ``data``, ``evaluation``, ``benchmark`` or ``cli``.
"""
from .base import BaseCAM
from .cfcam import CFCAM
from .eigencam import EigenCAM
from .gradcam import GradCAM, GradCAMPlusPlus
from .normgrad import NormGrad
from .realtime import FrameError, FrameResult, RealtimeCFCAM
from .scorecam import ScoreCAM
from .smooth_gradcam import SmoothGradCAMPlusPlus

__all__ = ["CFCAM", "BaseCAM", "EigenCAM", "FrameError", "FrameResult", "GradCAM", "GradCAMPlusPlus", "NormGrad",
           "RealtimeCFCAM", "ScoreCAM", "SmoothGradCAMPlusPlus"]
