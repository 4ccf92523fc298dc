"""The boundary F-score of Gated-SCNN's Table 2 (Takikawa et al. 2019, Sec. 4.2), as a metric
family (``eval.metrics = ["boundary_f"]``): how well predicted class boundaries fall on the true
ones, within a distance tolerance.

For every image and class ``c`` (the DAVIS / Gated-SCNN evaluation):

* the boundary of a binary map ``x`` is ``x XOR shifted(x)`` over the right, down and down-right
  neighbours (a one-pixel contour); void (255) is handled as the official code handles it: the
  void pixels are set to 0 in both binary maps (the class mask of the prediction and of the
  truth) *before* their boundaries are taken, and the boundary pixels that then lie on void (the
  outline of a void region) are kept in both maps (:func:`class_boundaries`). Until issue 27 we
  removed those pixels from both maps; on maps with void the two rules differ by up to 2.6 points;
* a predicted boundary pixel is correct when a true boundary pixel lies within ``r`` px
  (Euclidean), and symmetrically for recall; ``precision = |b(pred) within r of b(gt)| /
  |b(pred)|``, ``recall = |b(gt) within r of b(pred)| / |b(gt)|``, ``F = 2PR / (P + R)``; both
  boundaries empty gives F = 1, one empty F = 0;
* F is averaged over images, then over classes.

**Tolerances are fractions of the image diagonal**, as the official evaluation defines them:
0.00088, 0.001875, 0.00375 and 0.005, i.e. ``r = ceil(t * hypot(H, W))`` px (at least 1), which on
the paper's 1024x2048 Cityscapes images are the 3, 5, 9 and 12 px it reports. The metrics are
named after those px: ``bf_3px``, ``bf_5px``, ``bf_9px``, ``bf_12px`` (fractions, like every
metric of a record). On the streets' 128x256 images the radii are 1, 1, 2 and 2 px (the rounded
px rule used before issue 27 gave the same radii there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from scipy import ndimage

from seg_core.registry import METRIC_FAMILIES

IGNORE = 255
# tolerance as a fraction of the image diagonal, by the px it gives on 1024x2048 (the metric's name)
PAPER_TOLERANCES = {3: 0.00088, 5: 0.001875, 9: 0.00375, 12: 0.005}
PAPER_DIAGONAL = math.hypot(1024, 2048)


def tolerance_px(fraction: float, height: int, width: int) -> int:
    """The radius in px of a tolerance given as a ``fraction`` of the image diagonal."""
    return max(1, math.ceil(fraction * math.hypot(height, width) - 1e-9))


def boundary(x: np.ndarray) -> np.ndarray:
    """``x XOR shifted(x)`` over the right, down and down-right neighbours (the last row and
    column compare with nothing beyond the image)."""
    b = np.zeros_like(x, dtype=bool)
    b[:, :-1] |= x[:, :-1] ^ x[:, 1:]
    b[:-1, :] |= x[:-1, :] ^ x[1:, :]
    b[:-1, :-1] |= x[:-1, :-1] ^ x[1:, 1:]
    return b


def boundary_f(pred: np.ndarray, gt: np.ndarray, radius: float) -> float:
    """F of two boundary maps at tolerance ``radius`` px (see the module docstring)."""
    n_pred, n_gt = int(pred.sum()), int(gt.sum())
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    near_gt = ndimage.distance_transform_edt(~gt) <= radius
    near_pred = ndimage.distance_transform_edt(~pred) <= radius
    precision = (pred & near_gt).sum() / n_pred
    recall = (gt & near_pred).sum() / n_gt
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def class_boundaries(pred: np.ndarray, gt: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """The boundary maps of class ``c`` in a prediction and its truth, void as the official code
    treats it: zeroed in both class masks before the boundary, the boundary pixels on void kept."""
    valid = gt != IGNORE
    return boundary((pred == c) & valid), boundary((gt == c) & valid)


class BoundaryFScore:
    """Accumulates per-class boundary F (summed over images, with image counts) at each tolerance."""

    def __init__(self, num_classes: int, tolerances: Mapping[float, float] | None = None) -> None:
        """``tolerances``: ``{name in px at 1024x2048: fraction of the diagonal}`` (the paper's)."""
        self.num_classes = num_classes
        self.tolerances = dict(PAPER_TOLERANCES if tolerances is None else tolerances)
        self.sums = torch.zeros(len(self.tolerances), num_classes, dtype=torch.float64)
        self.images = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, batch: dict) -> None:
        labels = batch["label"].cpu().numpy()
        preds = pred.cpu().numpy()
        for p, g in zip(preds, labels):
            radii = [tolerance_px(t, *g.shape) for t in self.tolerances.values()]
            for c in range(self.num_classes):
                bp, bg = class_boundaries(p, g, c)
                for i, r in enumerate(radii):
                    self.sums[i, c] += boundary_f(bp, bg, r)
                self.images[c] += 1

    def reduce(self, shard) -> None:
        """Sum over the ranks of a data-parallel evaluation."""
        shard.all_reduce_(self.sums)
        shard.all_reduce_(self.images)

    def summary(self) -> dict[str, float]:
        per_class = self.sums / self.images.clamp(min=1)
        return {f"bf_{t:g}px": float(per_class[i].mean()) for i, t in enumerate(self.tolerances)}


METRIC_FAMILIES.register("boundary_f", metrics=tuple(f"bf_{t}px" for t in PAPER_TOLERANCES))(BoundaryFScore)
