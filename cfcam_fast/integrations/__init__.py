"""Drop-in CF-CAM classes for other CAM libraries: ``grad_cam`` (the grad-cam package) and
``torchcam``. Each module imports its host library, so import the one you use."""
