"""The boundary F-score of Gated-SCNN's Table 2 (Takikawa et al. 2019, Sec. 4.2), as a metric
family (``eval.metrics = ["boundary_f"]``): how well predicted class boundaries fall on the true
ones, within a distance tolerance.

For every image and class ``c`` (the DAVIS / Gated-SCNN evaluation):

* the boundary of a binary map ``x`` is ``x XOR shifted(x)`` over the right, down and down-right
  neighbours (a one-pixel contour); pixels labelled void (255) are removed from both maps;
* a predicted boundary pixel is correct when a true boundary pixel lies within ``r`` px
  (Euclidean), and symmetrically for recall; ``precision = |b(pred) within r of b(gt)| /
  |b(pred)|``, ``recall = |b(gt) within r of b(pred)| / |b(gt)|``, ``F = 2PR / (P + R)``; both
  boundaries empty gives F = 1, one empty F = 0;
* F is averaged over images, then over classes.

**Tolerances at another resolution.** The paper reports 3, 5, 9 and 12 px on 1024x2048
Cityscapes images, i.e. fractions ``t = px / hypot(1024, 2048)`` of the image diagonal; an image
of another size uses ``r = ceil(t * its diagonal)`` px (at least 1), so ``bf_<px>px`` always means
"the paper's <px> px tolerance, scaled". Metric names: ``bf_3px``, ``bf_5px``, ``bf_9px``,
``bf_12px`` (fractions, like every metric of a record).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from seg_core.registry import METRIC_FAMILIES

IGNORE = 255
PAPER_TOLERANCES_PX = (3, 5, 9, 12)
PAPER_DIAGONAL = math.hypot(1024, 2048)


def tolerance_px(paper_px: float, height: int, width: int, reference_diagonal: float = PAPER_DIAGONAL) -> int:
    """The paper's tolerance ``paper_px`` (on a ``reference_diagonal`` image) on a height x width image."""
    return max(1, math.ceil(paper_px / reference_diagonal * math.hypot(height, width) - 1e-9))


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


class BoundaryFScore:
    """Accumulates per-class boundary F (summed over images, with image counts) at each tolerance."""

    def __init__(
        self,
        num_classes: int,
        paper_tolerances: Sequence[float] = PAPER_TOLERANCES_PX,
        reference_diagonal: float = PAPER_DIAGONAL,
    ) -> None:
        self.num_classes = num_classes
        self.paper_tolerances = tuple(paper_tolerances)
        self.reference_diagonal = reference_diagonal
        self.sums = torch.zeros(len(self.paper_tolerances), num_classes, dtype=torch.float64)
        self.images = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, batch: dict) -> None:
        labels = batch["label"].cpu().numpy()
        preds = pred.cpu().numpy()
        for p, g in zip(preds, labels):
            valid = g != IGNORE
            radii = [tolerance_px(t, *g.shape, self.reference_diagonal) for t in self.paper_tolerances]
            for c in range(self.num_classes):
                bp = boundary((p == c) & valid) & valid
                bg = boundary((g == c) & valid) & valid
                for i, r in enumerate(radii):
                    self.sums[i, c] += boundary_f(bp, bg, r)
                self.images[c] += 1

    def reduce(self, shard) -> None:
        """Sum over the ranks of a data-parallel evaluation."""
        shard.all_reduce_(self.sums)
        shard.all_reduce_(self.images)

    def summary(self) -> dict[str, float]:
        per_class = self.sums / self.images.clamp(min=1)
        return {f"bf_{t:g}px": float(per_class[i].mean()) for i, t in enumerate(self.paper_tolerances)}


METRIC_FAMILIES.register("boundary_f", metrics=tuple(f"bf_{t}px" for t in PAPER_TOLERANCES_PX))(BoundaryFScore)
