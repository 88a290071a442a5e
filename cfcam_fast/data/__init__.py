"""Inputs of the application: models and their target layers, photos, image files,
datasets and videos.

May import ``core`` and ``cams`` (the ImageNet normalisation, model locks and hooks); never
``evaluation``, ``benchmark`` or ``cli``.
"""
