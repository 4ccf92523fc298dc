"""Inference modes of the evaluation (``eval.inference = {type = ..., ...}``), beyond the engine's
whole-image default: how an image at full resolution becomes logits at its size.

* ``slide`` (``crop`` [h, w], ``stride`` [h, w]): windows of ``crop`` every ``stride`` pixels,
  the image padded (bottom/right, zeros after normalisation: the mean colour) where it is smaller
  than a window; overlapping logits are averaged. PSPNet, ICNet and DeepLab evaluate Cityscapes at
  1024x2048 this way.
* ``multiscale`` (``scales``, ``flip``, ``inner``): the image resized by each factor (and
  mirrored), run through the ``inner`` mode (whole or slide), the class probabilities resized back
  and averaged (DeepLab's MSC + flip at test time, GCN's multi-scale test).

Each mode is ``(model, image, extra_inputs) -> logits`` at the image's size; the engine's
``model_inputs`` (made from the full image) go with it, cut to each window where they are maps
of the image's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from seg_core.engine import whole_image
from seg_core.registry import INFERENCE, ConfigError


def _positions(size: int, crop: int, stride: int) -> list[int]:
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop + 1, stride))
    if starts[-1] != size - crop:
        starts.append(size - crop)  # the last window ends at the border
    return starts


def _window(extra: dict, size, pad, top: int, left: int, crop) -> dict:
    """The extra inputs made at the image's size (image gradients, say), cut to the window."""
    out = {}
    for name, value in extra.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 2 and tuple(value.shape[-2:]) == tuple(size):
            value = F.pad(value, (0, pad[1], 0, pad[0])) if any(pad) else value
            value = value[..., top : top + crop[0], left : left + crop[1]]
        out[name] = value
    return out


@INFERENCE.register("slide")
def slide(*, crop: Sequence[int], stride: Sequence[int]):
    """Sliding windows of ``crop`` every ``stride`` pixels, logits averaged where they overlap."""
    crop, stride = tuple(crop), tuple(stride)
    if len(crop) != 2 or len(stride) != 2 or min(crop) < 1 or min(stride) < 1:
        raise ConfigError(
            "crop", f"expected crop and stride as [height, width] of positive sizes, got {crop}, {stride}"
        )
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise ConfigError("stride", f"a stride {stride} larger than the crop {crop} would leave pixels unseen")

    def infer(model, image: torch.Tensor, extra: dict) -> torch.Tensor:
        n, _, h, w = image.shape
        ph, pw = max(0, crop[0] - h), max(0, crop[1] - w)
        padded = F.pad(image, (0, pw, 0, ph)) if ph or pw else image
        total = count = None
        for top in _positions(h + ph, crop[0], stride[0]):
            for left in _positions(w + pw, crop[1], stride[1]):
                window = padded[..., top : top + crop[0], left : left + crop[1]]
                logits = model(window, **_window(extra, (h, w), (ph, pw), top, left, crop))["out"]
                if total is None:
                    total = logits.new_zeros((n, logits.shape[1], h + ph, w + pw))
                    count = logits.new_zeros((1, 1, h + ph, w + pw))
                total[..., top : top + crop[0], left : left + crop[1]] += logits
                count[..., top : top + crop[0], left : left + crop[1]] += 1
        return (total / count)[..., :h, :w]

    return infer


@INFERENCE.register("multiscale")
def multiscale(
    *, scales: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), flip: bool = True, inner: dict | None = None
):
    """The image at each scale (and mirrored); class probabilities averaged at the image size."""
    if not scales or min(scales) <= 0:
        raise ConfigError("scales", f"expected positive scale factors, got {list(scales)}")
    inner_spec = dict(inner or {"type": "whole"})
    kind = inner_spec.pop("type")
    if kind == "multiscale":
        raise ConfigError("inner", "a multi-scale inference cannot nest another")
    run = INFERENCE.build(kind, **inner_spec) if kind != "whole" else whole_image()

    def infer(model, image: torch.Tensor, extra: dict) -> torch.Tensor:
        h, w = image.shape[-2:]
        probs = 0
        views = 0
        for scale in scales:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            scaled = F.interpolate(image, size=size, mode="bilinear", align_corners=False) if size != (h, w) else image
            for mirrored in (False, True) if flip else (False,):
                x = scaled.flip(-1) if mirrored else scaled
                logits = run(model, x, extra)
                logits = logits.flip(-1) if mirrored else logits
                probs = probs + F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False).softmax(1)
                views += 1
        return (probs / views).log()

    return infer
