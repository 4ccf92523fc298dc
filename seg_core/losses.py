"""Losses, composed by name with weights.

A loss term is a callable ``(outputs, targets) -> scalar`` reading the model output and the
target it is named after. :class:`CompositeLoss` sums weighted terms and reports each one, so
ICNet's cascade label guidance (0.4 / 0.4 / 1.0) or Gated-SCNN's four losses are configs,
not code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = 255

LossFn = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], torch.Tensor]


def downsample_labels(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) integer labels -> (N, h, w) by nearest neighbour.

    Nearest keeps every value a real label (bilinear would blend class ids and turn the
    ignore index 255 into bogus classes along void regions); used by ICNet's cascade label
    guidance (Sec. 3.4) for the 1/16, 1/8 and 1/4 outputs.
    """
    if tuple(label.shape[-2:]) == tuple(size):
        return label
    return F.interpolate(label[:, None].float(), size=tuple(size), mode="nearest")[:, 0].to(label.dtype)


def cross_entropy(
    output: str = "out", target: str = "label", ignore_index: int = IGNORE_INDEX
) -> LossFn:
    """Pixel-wise softmax cross-entropy of ``outputs[output]`` against ``targets[target]``.

    Pixels labelled ``ignore_index`` (255: VOC's void outline, padding) contribute nothing;
    the mean is over the remaining pixels. An output smaller than the labels (an auxiliary
    output at 1/16, say) is compared with the labels downsampled by nearest neighbour.
    """

    def loss(outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logits = outputs[output]
        labels = downsample_labels(targets[target].long(), tuple(logits.shape[-2:]))
        return F.cross_entropy(logits, labels, ignore_index=ignore_index)

    return loss


LOSSES: dict[str, Callable[..., LossFn]] = {"cross_entropy": cross_entropy}


class CompositeLoss(nn.Module):
    """Weighted sum of named loss terms; ``forward`` returns ``(total, {name: value})``."""

    def __init__(self, terms: Mapping[str, tuple[LossFn, float]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("a composite loss needs at least one term")
        self.terms = dict(terms)

    @classmethod
    def from_config(cls, config: Mapping[str, Mapping]) -> CompositeLoss:
        """``{"seg": {"type": "cross_entropy", "weight": 1.0, "output": "out"}, ...}``."""
        terms = {}
        for name, spec in config.items():
            spec = dict(spec)
            kind = spec.pop("type")
            weight = float(spec.pop("weight", 1.0))
            if kind not in LOSSES:
                raise KeyError(f"unknown loss type {kind!r}; known: {', '.join(sorted(LOSSES))}")
            terms[name] = (LOSSES[kind](**spec), weight)
        return cls(terms)

    def forward(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total = None
        parts = {}
        for name, (fn, weight) in self.terms.items():
            value = fn(outputs, targets)
            parts[name] = float(value.detach())
            total = weight * value if total is None else total + weight * value
        return total, parts
