"""seg_core: a thin segmentation model library for reproducing paper ablations.

Layers/heads, backbones, models, losses, metrics, datasets and a small train/evaluate engine.
No CLI and no file-layout policy: :mod:`ablations` drives it.
"""

from seg_core import backbones, boundary_f, crf, crop_eval, data, inference, models, shape_losses  # noqa: F401  (fill the registries)
from seg_core.registry import BACKBONES, DATASETS, HEADS, MODELS

__version__ = "0.1.0"
__all__ = ["BACKBONES", "DATASETS", "HEADS", "MODELS"]
