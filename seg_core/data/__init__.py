"""Datasets: the embedded synthetic shapes and the real-dataset loaders of the paper scale."""

from torch.utils.data import Dataset, Subset

from seg_core.data import synthetic, voc  # noqa: F401  (registers the builders)
from seg_core.data.synthetic import ShapesConfig, SyntheticShapes

__all__ = ["ShapesConfig", "SyntheticShapes", "take"]


def take(dataset: Dataset, start: int, stop: int) -> Dataset:
    """Items ``start..stop-1`` of ``dataset``, e.g. to hold out the tail of a training split.

    In-memory datasets (``images``/``labels`` tensors, like :class:`SyntheticShapes`) are sliced
    so they keep their fast path; others become a :class:`~torch.utils.data.Subset`.
    """
    if not 0 <= start <= stop <= len(dataset):
        raise ValueError(f"cannot take items {start}..{stop - 1} of a dataset of {len(dataset)}")
    if hasattr(dataset, "slice"):
        return dataset.slice(start, stop)
    return Subset(dataset, range(start, stop))
