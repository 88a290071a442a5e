"""Triton kernels of cfcam_fast, installed as ``cfcam_fast.kernels``."""
