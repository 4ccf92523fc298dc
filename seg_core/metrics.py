"""Segmentation metrics from one confusion matrix accumulated over the whole evaluation set.

mIoU is never averaged per image: predictions and labels of every image go into one
``num_classes x num_classes`` matrix (rows = ground truth, columns = prediction), pixels
labelled ``ignore_index`` are dropped, and ``IoU_c = TP / (TP + FP + FN)`` is averaged over
the classes that occur (in the labels or the predictions) — the PASCAL VOC / Cityscapes
protocol.

Boundary-band vs interior evaluation (Large Kernel Matters, Table 5): a pixel is on a
boundary when one of its 4-neighbours has another label (for VOC the 255 void outline is
itself the boundary, so labelled pixels next to it count); the band is every *labelled*
pixel within Euclidean distance ``band_width`` of a boundary pixel, the interior the other
labelled pixels. Each region accumulates its own confusion matrix.
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
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

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


def boundary_mask(label: torch.Tensor) -> torch.Tensor:
    """Pixels with a 4-neighbour of another label (any label, void included). ``label``: (..., H, W)."""
    edge = torch.zeros_like(label, dtype=torch.bool)
    dv = label[..., 1:, :] != label[..., :-1, :]
    dh = label[..., :, 1:] != label[..., :, :-1]
    edge[..., 1:, :] |= dv
    edge[..., :-1, :] |= dv
    edge[..., :, 1:] |= dh
    edge[..., :, :-1] |= dh
    return edge


def band_width_for(image_size: int, paper_width: float = 7.0, paper_size: int = 512) -> int:
    """The paper's band (7 px at 512 px input) scaled to ``image_size``; at least 1 px.

    Table 5 uses 7 px on VOC images padded to 512 px. Scaling by the input side keeps the band
    the same fraction of the image: 64 px -> 1 px, 128 px -> 2 px, 512 px -> 7 px.
    """
    return max(1, round(paper_width * image_size / paper_size))


def boundary_band(label: torch.Tensor, width: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Labelled pixels within Euclidean distance ``width`` of a boundary pixel. ``label``: (N, H, W)."""
    if width < 0:
        raise ValueError(f"band width must be >= 0, got {width}")
    edge = boundary_mask(label).float().unsqueeze(1)
    r = int(width)
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    disk = ((yy**2 + xx**2) <= width**2).float()[None, None]
    near = F.conv2d(edge, disk, padding=r)[:, 0] > 0
    return near & (label != ignore_index)


class SegmentationEvaluator:
    """Overall confusion matrix plus optional boundary-band / interior matrices."""

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

    def summary(self) -> dict:
        out = self.overall.summary()
        if self.band is not None:
            out.update(self.band.summary("boundary_"))
            out.update(self.interior.summary("interior_"))
            out["band_width_px"] = self.band_width
        return out
