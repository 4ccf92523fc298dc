"""Taking part of a dataset (the held-out tail of a training split)."""

from __future__ import annotations

from torch.utils.data import Dataset, Subset


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
