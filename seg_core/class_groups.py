"""mIoU over named groups of classes: where a gain lands (Gated-SCNN, Sec. 4.1: its gain
"concentrates on thin and small classes").

A :class:`ClassGroupMIoU` reads one confusion matrix over the whole evaluation set; a group's
mIoU (``<group>_miou``) is the mean IoU of its member classes present in the set. Groups are
given by class *name*, so that the same question ("thin structures", "small objects") can be
asked of datasets with different class lists; a dataset registers its grouping as a metric
family (``eval.metrics``), e.g. ``cityscapes_groups`` in :mod:`seg_core.data.cityscapes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from seg_core.metrics import ConfusionMatrix, summarize
from seg_core.registry import ConfigError

GROUP_METRICS = ("large_miou", "thin_miou", "small_miou")  # the groups every grouping defines


class ClassGroupMIoU:
    """``<group>_miou`` for each group of ``groups`` (``{group: class names}``) over ``class_names``."""

    def __init__(
        self, class_names: Sequence[str], groups: Mapping[str, Sequence[str]], num_classes: int, family: str
    ) -> None:
        if num_classes != len(class_names):
            raise ConfigError(
                "eval.metrics", f"{family} reads the {len(class_names)} classes it groups, got {num_classes}"
            )
        unknown = sorted({name for members in groups.values() for name in members} - set(class_names))
        if unknown:
            raise ConfigError("eval.metrics", f"{family}: classes {unknown} are not among {list(class_names)}")
        self.members = {group: [class_names.index(name) for name in names] for group, names in groups.items()}
        self.matrix = ConfusionMatrix(num_classes)

    def update(self, pred: torch.Tensor, batch: dict) -> None:
        self.matrix.update(pred.cpu(), batch["label"].cpu())

    def reduce(self, shard) -> None:
        shard.all_reduce_(self.matrix.matrix)

    def summary(self) -> dict[str, float]:
        iou = summarize(self.matrix.matrix)["per_class_iou"]
        out = {}
        for group, members in self.members.items():
            values = [iou[c] for c in members if iou[c] is not None]
            out[f"{group}_miou"] = float(np.mean(values)) if values else float("nan")
        return out
