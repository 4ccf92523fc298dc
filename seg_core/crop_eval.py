"""Gated-SCNN's distance-based evaluation (Takikawa et al. 2019, Sec. 4.2 and Fig. 6): how a model
does on small, distant objects, which sit near the image centre in driving scenes.

For a crop factor CF (the paper's 0, 100, 200, 300, 400 px on 1024x2048 images), CF px are cut
from each side of the image and its labels, and what is left is resized back to the full size
(the image bilinearly, the labels by nearest neighbour): distant objects become larger, as if the
camera had zoomed in. The model runs on the resized crop; the metrics compare with the resized
labels. CF = 0 is the plain evaluation.

**At another resolution** a factor keeps its fraction of the image width:
``round(CF * width / 2048)`` px from each side (horizontal and vertical alike, as the paper cuts
the same number of pixels from every side). Metrics are named ``crop<CF>_miou`` after the paper's
factor (``crop200_miou``), as fractions like every metric of a record.

This evaluation runs on the trained model after the run's own (``eval.crop_factors`` in a spec: a
registered :data:`~seg_core.registry.EVALUATIONS` entry), through the same engine evaluation: the
spec's inference mode, extra model inputs (made from the resized raw crop) and metric families.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from seg_core import engine
from seg_core.registry import EVALUATIONS, METRIC_FAMILIES, ConfigError

PAPER_FACTORS = (0, 100, 200, 300, 400)
PAPER_WIDTH = 2048


def crop_pixels(factor: float, width: int, paper_width: int = PAPER_WIDTH) -> int:
    """The paper's crop factor (px on a ``paper_width`` image) on an image ``width`` px wide."""
    return round(factor * width / paper_width)


class CroppedView(Dataset):
    """A dataset's images and labels with ``cut`` px removed from each side, resized back."""

    def __init__(self, dataset: Dataset, cut: int) -> None:
        self.dataset, self.cut = dataset, cut

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.dataset[index]
        image, label = item["image"], item["label"]
        if self.cut == 0:
            return item
        h, w = label.shape[-2:]
        c = self.cut
        if 2 * c >= min(h, w):
            raise ValueError(f"a crop of {c} px from each side leaves nothing of a {h}x{w} image")
        image = image[:, c : h - c, c : w - c].float()[None]
        label = label[c : h - c, c : w - c][None, None].float()
        image = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False)[0].round().clamp(0, 255)
        label = F.interpolate(label, size=(h, w), mode="nearest")[0, 0]
        return {"image": image.to(torch.uint8), "label": label.to(item["label"].dtype)}


def crop_metrics(
    model: torch.nn.Module,
    dataset: Dataset,
    factors: Sequence[float],
    *,
    num_classes: int,
    batch_size: int = 64,
    inference: dict | None = None,
    metrics: Sequence[str] = (),
    amp: str = "none",
    shard=None,
) -> dict[str, float]:
    """``crop<CF>_miou`` for every factor (and ``crop<CF>_<metric>`` of the families named)."""
    width = int(dataset[0]["label"].shape[-1])
    out: dict[str, float] = {}
    for factor in factors:
        view = CroppedView(dataset, crop_pixels(factor, width))
        scored = engine.evaluate(
            model, view, num_classes=num_classes, batch_size=batch_size, inference=inference,
            metrics=metrics, amp=amp, shard=shard,
        )  # fmt: skip
        scored.pop("eval_s", None)
        name = f"crop{factor:g}"
        out[f"{name}_miou"] = scored["miou"]
        out.update({f"{name}_{k}": v for k, v in scored.items() if k.startswith("bf_")})
    return out


def _check_factors(factors: Sequence[float]) -> None:
    if any(f < 0 for f in factors) or len(set(factors)) != len(factors):
        raise ConfigError("crop_factors", f"expected distinct crop factors >= 0 (px at 2048 wide), got {list(factors)}")


def _metric_names(factors: Sequence[float], families: Sequence[str]) -> list[str]:
    names = []
    for factor in factors:
        names.append(f"crop{factor:g}_miou")
        names += [f"crop{factor:g}_{m}" for f in families for m in METRIC_FAMILIES.metadata(f).get("metrics", ())]
    return names


EVALUATIONS.register("crop_factors", value_type=list[int], check=_check_factors, metrics=_metric_names)(
    lambda factors, model, dataset, **evaluation: crop_metrics(model, dataset, factors, **evaluation)
)
