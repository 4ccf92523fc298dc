"""Gated-SCNN's distance-based evaluation (Takikawa et al. 2019, Sec. 4.2 and Fig. 6): how a model
does on small, distant objects, which sit near the vanishing point of a driving scene.

**What is cut**, in the paper's pixels on a 1024 x 2048 image, for a crop factor CF (0, 200, 300,
400 in the paper's figure): first 100 px from the bottom, the left and the right (every side but
the top: the ego vehicle's bonnet and the image's edges), then CF px from the top and the bottom
and 2 CF px from the left and the right. What is left, ``(924 - 2 CF) x (1848 - 4 CF)``, keeps
the image's 1:2 and sits around the vanishing point (CF 400: 124 x 248); it is resized back to
the full size, the image bilinearly and the labels by sampling each output pixel's centre
(``nearest-exact``), so a model that is right on the crop is right on the resized labels. The
model runs on the resized crop; the metrics compare with the resized labels. CF 0 is therefore
not the whole image (the 100 px margin is cut); the paper's CF-0 numbers (78.8 and 80.9) are
within 0.1 of its whole-image Table 1 (78.8 and 80.8), so its numbers cannot tell the two apart.
This is our reading of Sec. 4 (REFERENCE 4); the stored copies of the paper we could search hold
only its opening pages, so the rule is not confirmed beyond that reading.

Until issue 27 the labels were resized with torch's legacy ``nearest`` (input pixel
``floor(j * in / out)``: half an output pixel off the bilinear image; a perfect segmenter scored
84-88 mIoU on the crops) and CF px were cut from every side; results before that are withdrawn.

**At another resolution** every cut keeps its fraction of the width: ``px * width / 2048``,
rounded half up (:func:`crop_box`). Metrics are named ``crop<CF>_miou`` after the paper's factor
(``crop200_miou``), as fractions like every metric of a record.

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

PAPER_FACTORS = (0, 200, 300, 400)
PAPER_WIDTH = 2048
PAPER_MARGIN = 100  # px cut from the bottom, left and right before any crop factor


def _scaled(px: float, width: int, paper_width: int) -> int:
    return int(px * width / paper_width + 0.5)


def crop_box(
    factor: float, height: int, width: int, paper_width: int = PAPER_WIDTH, margin: float = PAPER_MARGIN
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) bounds, end-exclusive, of the crop for the paper's ``factor`` on
    a height x width image (see the module docstring)."""
    top = _scaled(factor, width, paper_width)
    bottom = height - _scaled(margin + factor, width, paper_width)
    left = _scaled(margin + 2 * factor, width, paper_width)
    right = width - left
    if bottom - top < 1 or right - left < 1:
        raise ValueError(f"crop factor {factor:g} leaves nothing of a {height}x{width} image")
    return top, bottom, left, right


def resize_labels(label: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(H, W) labels resized to ``size`` by each output pixel's centre (``nearest-exact``): aligned
    with an image resized bilinearly with ``align_corners=False``; every value stays a label."""
    resized = F.interpolate(label[None, None].float(), size=tuple(size), mode="nearest-exact")[0, 0]
    return resized.to(label.dtype)


class CroppedView(Dataset):
    """A dataset's images and labels cropped for one crop factor and resized back."""

    def __init__(self, dataset: Dataset, factor: float, paper_width: int = PAPER_WIDTH) -> None:
        self.dataset, self.factor, self.paper_width = dataset, factor, paper_width

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.dataset[index]
        image, label = item["image"], item["label"]
        h, w = label.shape[-2:]
        top, bottom, left, right = crop_box(self.factor, h, w, self.paper_width)
        crop = image[None, :, top:bottom, left:right].float()
        image = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0].round().clamp(0, 255)
        return {"image": image.to(torch.uint8), "label": resize_labels(label[top:bottom, left:right], (h, w))}


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
    out: dict[str, float] = {}
    for factor in factors:
        view = CroppedView(dataset, factor)
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
