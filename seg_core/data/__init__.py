"""Datasets: the embedded synthetic shapes and the real-dataset loaders of the paper scale."""

from seg_core.data import cityscapes, flat, streets, synthetic, voc  # noqa: F401  (registers the builders)
from seg_core.data.splits import take
from seg_core.data.synthetic import ShapesConfig, SyntheticShapes

__all__ = ["ShapesConfig", "SyntheticShapes", "take"]
