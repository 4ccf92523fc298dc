"""Segmentation metrics from one confusion matrix accumulated over the whole evaluation set.

mIoU is never averaged per image: predictions and labels of every image go into one
``num_classes x num_classes`` matrix (rows = ground truth, columns = prediction), pixels
labelled ``ignore_index`` are dropped, and ``IoU_c = TP / (TP + FP + FN)`` is averaged over
the classes that occur (in the labels or the predictions) — the PASCAL VOC / Cityscapes
protocol.

Boundary-band vs interior evaluation (Large Kernel Matters, Table 5): the band is every
*labelled* pixel whose centre lies within Euclidean distance ``band_width`` of a label change
(a pixel edge between 4-neighbours with different labels; void and padding are not labels, see
:func:`boundary_band`), the interior the other labelled pixels. Each region accumulates its own
confusion matrix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from seg_core.losses import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates a ``num_classes x num_classes`` int64 confusion matrix."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add ``pred``/``label`` (same shape, class indices); ``mask`` selects pixels."""
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != label shape {tuple(label.shape)}")
        keep = label != self.ignore_index
        if mask is not None:
            keep &= mask
        label = label[keep].long()
        pred = pred[keep].long()
        if label.numel() and (int(label.max()) >= self.num_classes or int(label.min()) < 0):
            raise ValueError(f"label values outside [0, {self.num_classes}) besides {self.ignore_index}")
        index = label * self.num_classes + pred
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def summary(self, prefix: str = "") -> dict[str, float | list[float | None]]:
        return summarize(self.matrix, prefix)


def summarize(matrix: torch.Tensor, prefix: str = "") -> dict[str, float | list[float | None]]:
    """mIoU, per-class IoU (None for absent classes), pixel accuracy and mean class accuracy."""
    m = matrix.double()
    tp = m.diag()
    gt = m.sum(1)
    pred = m.sum(0)
    union = gt + pred - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    has_gt = gt > 0
    acc = torch.where(has_gt, tp / gt.clamp(min=1), torch.full_like(tp, math.nan))
    total = m.sum()
    return {
        f"{prefix}miou": float(iou[present].mean()) if present.any() else math.nan,
        f"{prefix}pixel_acc": float(tp.sum() / total) if total > 0 else math.nan,
        f"{prefix}mean_acc": float(acc[has_gt].mean()) if has_gt.any() else math.nan,
        f"{prefix}per_class_iou": [None if math.isnan(v) else float(v) for v in iou.tolist()],
    }


def fill_void(label: torch.Tensor, steps: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Void/padding pixels take the label of a labelled 4-neighbour, ``steps`` times over.

    Each step grows the labelled regions by one pixel into ``ignore_index`` pixels (where
    several labels reach a pixel at once, the largest id wins, so the result is deterministic).
    A void outline between two objects is thus split along its middle, and padding takes the
    label of the image border next to it. Pixels farther than ``steps`` from any label stay void.
    """
    filled = label.clone()
    for _ in range(steps):
        void = filled == ignore_index
        if not void.any():
            break
        known = torch.where(
            void, torch.full_like(filled, -1), filled.to(torch.int64 if filled.dtype == torch.uint8 else filled.dtype)
        )
        best = torch.full_like(known, -1)
        best[..., 1:, :] = torch.maximum(best[..., 1:, :], known[..., :-1, :])
        best[..., :-1, :] = torch.maximum(best[..., :-1, :], known[..., 1:, :])
        best[..., :, 1:] = torch.maximum(best[..., :, 1:], known[..., :, :-1])
        best[..., :, :-1] = torch.maximum(best[..., :, :-1], known[..., :, 1:])
        grow = void & (best >= 0)
        if not grow.any():
            break
        filled = torch.where(grow, best.to(filled.dtype), filled)
    return filled


def label_changes(label: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Where two 4-neighbours carry different labels, neither of them void.

    Returns ``(vertical, horizontal)``: ``vertical[..., i, j]`` marks the pixel edge between
    ``(i, j)`` and ``(i, j + 1)`` (shape ``(..., H, W - 1)``), ``horizontal[..., i, j]`` the edge
    between ``(i, j)`` and ``(i + 1, j)`` (shape ``(..., H - 1, W)``).
    """
    valid = label != ignore_index
    vertical = (label[..., :, 1:] != label[..., :, :-1]) & valid[..., :, 1:] & valid[..., :, :-1]
    horizontal = (label[..., 1:, :] != label[..., :-1, :]) & valid[..., 1:, :] & valid[..., :-1, :]
    return vertical, horizontal


def _edge_reach(edges: torch.Tensor, width: float, across: int) -> torch.Tensor:
    """Pixels whose centre lies within ``width`` of a marked pixel edge (Euclidean, exact).

    ``edges`` is (N, H, W) with the edge between pixel ``(i, j)`` and its neighbour along axis
    ``across`` (-1: ``(i, j+1)``; -2: ``(i+1, j)``) marked at ``(i, j)``. Pixel centres sit at
    half-integers, so a pixel ``d`` steps across from the edge is ``|d - 1/2|`` away from it, and
    one ``e`` steps along it ``max(0, |e| - 1/2)``.
    """
    r = int(math.floor(width + 0.5)) + 1
    steps = torch.arange(-r, r + 1, dtype=torch.float64)
    across_d = (-steps - 0.5).abs()  # kernel index a -> pixel offset -a across the edge
    along_d = (steps.abs() - 0.5).clamp(min=0)
    if across == -1:
        dist2 = along_d[:, None] ** 2 + across_d[None, :] ** 2
    else:
        dist2 = across_d[:, None] ** 2 + along_d[None, :] ** 2
    kernel = (dist2 <= width**2 + 1e-9).float()[None, None]
    hit = F.conv2d(edges[:, None].float(), kernel, padding=r)[:, 0]
    return hit > 0.5


def band_width_for(height: int, width: int | None = None, paper_width: float = 7.0, paper_size: int = 512) -> float:
    """The paper's band (7 px on 512 x 512 inputs) scaled to an image of ``height`` x ``width``.

    The band keeps the same fraction of the image side: ``7 * side / 512`` with ``side`` the
    geometric mean of height and width (the side for square images). 64 px -> 0.875 px,
    128 px -> 1.75 px, 512 px -> 7 px. Not rounded: the band test is on real distances.
    """
    side = math.sqrt(height * (height if width is None else width))
    return paper_width * side / paper_size


def boundary_band(label: torch.Tensor, width: float, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Labelled pixels whose centre lies within Euclidean distance ``width`` of a label change.

    Large Kernel Matters, Table 5 (``label``: (N, H, W)). A label change is a pixel edge between
    4-neighbours with different labels; void and padding (``ignore_index``) are not labels, so
    they first take the label of the nearest labelled pixel (:func:`fill_void`): a void outline
    around an object (VOC) contributes its middle line, padding contributes nothing. A pixel
    next to a straight change is 0.5 px from it, one diagonal to a corner 0.71 px, the next one
    out 1.5 px; ``width`` 0.875 (64 px images) keeps the first two.
    """
    if width < 0:
        raise ValueError(f"band width must be >= 0, got {width}")
    filled = fill_void(label, int(math.ceil(width)) + 2, ignore_index)
    vertical, horizontal = label_changes(filled, ignore_index)
    n, h, w = label.shape
    v_full = torch.zeros(n, h, w, dtype=torch.bool, device=label.device)
    v_full[..., :, :-1] = vertical
    h_full = torch.zeros(n, h, w, dtype=torch.bool, device=label.device)
    h_full[..., :-1, :] = horizontal
    near = _edge_reach(v_full, width, -1) | _edge_reach(h_full, width, -2)
    return near & (label != ignore_index)


_BASE_METRICS = ("miou", "pixel_acc", "mean_acc")


class SegmentationEvaluator:
    """Overall confusion matrix plus optional boundary-band / interior matrices."""

    METRICS = _BASE_METRICS + tuple(f"{region}_{m}" for region in ("boundary", "interior") for m in _BASE_METRICS)

    def __init__(self, num_classes: int, band_width: int | None = None, ignore_index: int = IGNORE_INDEX) -> None:
        self.band_width = band_width
        self.overall = ConfusionMatrix(num_classes, ignore_index)
        self.band = ConfusionMatrix(num_classes, ignore_index) if band_width is not None else None
        self.interior = ConfusionMatrix(num_classes, ignore_index) if band_width is not None else None

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        self.overall.update(pred, label)
        if self.band is not None:
            band = boundary_band(label, self.band_width, self.overall.ignore_index)
            self.band.update(pred, label, band)
            self.interior.update(pred, label, ~band)

    def reduce(self, shard) -> None:
        """Sum the matrices over the ranks of a data-parallel evaluation (int64, exact)."""
        for cm in (self.overall, self.band, self.interior):
            if cm is not None:
                shard.all_reduce_(cm.matrix)

    def summary(self) -> dict:
        out = self.overall.summary()
        if self.band is not None:
            out.update(self.band.summary("boundary_"))
            out.update(self.interior.summary("interior_"))
            out["band_width_px"] = self.band_width
        return out
