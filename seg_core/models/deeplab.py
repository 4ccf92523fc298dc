"""DeepLab v1/v2 (Chen et al. 2015, 2017): the field-of-view heads, LargeFOV and ASPP.

A DeepLab v1/v2 head sits on the trunk's top map (output stride 8):

* :class:`FieldOfViewHead`: "fc6" (a k x k convolution at rate r, ``width`` channels), ReLU,
  dropout, "fc7" (1x1, ``width``), ReLU, dropout, "fc8" (1x1 to the classes). v2 Table 1's
  field-of-view family on VGG-16 is this head with fc6 = 7x7 rate 4 (4096 channels), 4x4 rate 4,
  4x4 rate 8 (4096) and 3x3 rate 12 (1024, DeepLab-LargeFOV). Even kernels are centred by the
  dilated extent (``rate * (k - 1) + 1``), which is odd for these rates.
* :class:`SummedASPP` (v2 Sec. 3.3, Fig. 4): parallel branches at several rates whose class
  scores are **summed**. On VGG-16 each branch is a field-of-view head (3x3 fc6 at its rate, fc7,
  fc8: ASPP-S = rates 2/4/8/12, ASPP-L = 6/12/18/24); on ResNet-101 each branch is one 3x3
  convolution straight to the classes (``branch = "direct"``).

**The trunk at output stride 8.** DeepLab v2's ResNet-101 runs every unit of res4 at rate 2 and of
res5 at rate 4: build it as ``backbone = "cascaded_resnet"`` with ``depth = 101`` and
``output_stride = 8``, which does (tests/test_deeplab.py); torchvision's ``resnet101`` at output
stride 8 runs the first unit of each dilated stage at the previous rate, which is not DeepLab's
network. The builder takes the trunk as configured: the paper scale sets output stride 8 (every
paper-scale spec of this family is checked by tests/test_deeplab.py), and the mini scale runs
its heads on a 16-cell map at output stride 4 on purpose, the rates following the map's side
(below), not the stride.

**Rates and widths at another scale, one rule.** A rate means nothing without the map it runs
on: the paper's rates are chosen for fc6 at 1/8 of 321 px crops (a 41-cell map). A model built
for a ``feature_map`` of another side keeps the paper's ratio of rate to map side,
:func:`scaled_rate`: ``max(1, round(rate * feature_map / paper_feature_map))`` (even kernels:
the nearest even rate, so that they stay centred). Specs state the
paper's rates; the scale block states the map sides; the model records both
(:meth:`DeepLabV2.describe`). Head widths scale by ``width_scale`` (the paper's 4096 and 1024
channels at 1/128 are 32 and 8 at the mini scale), the same factor for every head of a table.

**Dropout at another width, the same noise.** fc6 and fc7 are followed by element-wise dropout
(the paper's Caffe ``Dropout`` layers, rate 0.5). A unit that sums ``n`` dropped-out inputs sees
noise of relative variance ``p / ((1 - p) n)``; at 4096 or 1024 inputs that is small, at 1/128 of
the width the same rate makes it 128 times larger (measured on the mini features: a randomly
initialised 8- or 32-channel head with dropout 0.5, channel-wise or element-wise, fits no
foreground in 600 steps, where without dropout it does). :func:`scaled_dropout` keeps
``p / ((1 - p) n)`` as the paper's: 0.5 at 1/128 width is 1/129.

The logits are upsampled bilinearly to the input (the paper's x8 interpolation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seg_core.backbones.base import StagedBackbone
from seg_core.contract import Segmenter
from seg_core.layers import build_backbone
from seg_core.registry import MODELS, ConfigError

PAPER_FEATURE_MAP = 41  # DeepLab v2's fc6 map: 321 px VOC training crops at output stride 8


def scaled_rate(rate: int, feature_map: int | None, paper_feature_map: int = PAPER_FEATURE_MAP, kernel: int = 3) -> int:
    """The paper's atrous ``rate`` on a map of side ``feature_map`` (None: the paper's own map):
    the ratio of rate to map side is kept, and a rate is at least 1. An even kernel spans an odd
    number of pixels (so it can be centred) only at an even rate, as the paper's 4x4 kernels at
    rates 4 and 8 do: for even kernels the rate is rounded to the nearest even number (>= 2)."""
    if feature_map is None:
        return rate
    exact = rate * feature_map / paper_feature_map
    if kernel % 2 == 0:
        return max(2, 2 * round(exact / 2))
    return max(1, round(exact))


def scaled_dropout(rate: float, width_scale: float) -> float:
    """The dropout rate that keeps a unit's dropout noise, ``p / ((1 - p) n)``, when its ``n``
    inputs are scaled by ``width_scale`` (see the module docstring)."""
    odds = rate / (1 - rate) * width_scale
    return odds / (1 + odds)


def _conv(in_channels: int, out_channels: int, kernel: int, rate: int) -> nn.Conv2d:
    extent = rate * (kernel - 1) + 1
    if extent % 2 == 0:
        raise ConfigError(
            "kernel", f"a {kernel}x{kernel} kernel at rate {rate} spans {extent} px, which cannot be centred"
        )
    return nn.Conv2d(in_channels, out_channels, kernel, padding=(extent - 1) // 2, dilation=rate)


class FieldOfViewHead(nn.Sequential):
    """fc6 (k x k at ``rate``, ``width``) -> ReLU -> dropout -> fc7 (1x1) -> ReLU -> dropout -> fc8."""

    def __init__(
        self, in_channels: int, num_classes: int, *, kernel: int, rate: int, width: int, dropout: float
    ) -> None:
        super().__init__(
            _conv(in_channels, width, kernel, rate),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(width, width, 1),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(width, num_classes, 1),
        )


class SummedASPP(nn.Module):
    """DeepLab v2's atrous spatial pyramid pooling: one branch per rate, class scores summed."""

    def __init__(self, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class DeepLabV2(Segmenter):
    """A trunk at output stride 8 and a v1/v2 head on its top map, upsampled to the input."""

    def __init__(self, backbone: StagedBackbone, head: nn.Module, info: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.decoder_inputs = (backbone.top,)
        self.info = info

    def decode(self, features: Mapping[str, torch.Tensor], size: Sequence[int], **extra) -> dict[str, torch.Tensor]:
        logits = self.head(features[self.backbone.top])
        return {"out": F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)}

    def parts(self) -> dict[str, tuple[str, ...]]:
        return {"backbone": ("backbone",), "head": ("head",)}

    def describe(self) -> dict[str, Any]:
        """The head as built: the paper's rates and the rates used, widths, kernel."""
        return dict(self.info)


_TINY = {
    "backbone": "mini_resnet",
    "backbone_options": {"stem_width": 4, "widths": [4, 4, 8]},
    "rates": [2, 4],
    "width": 8,
}


@MODELS.register("deeplab_v2", example=_TINY)
def deeplab_v2(
    *,
    num_classes: int,
    backbone: str,
    rates: Sequence[int] = (12,),
    kernel: int = 3,
    width: int = 1024,
    branch: str = "fc",
    width_scale: float = 1.0,
    feature_map: int | None = None,
    paper_feature_map: int = PAPER_FEATURE_MAP,
    dropout: float = 0.5,
    backbone_options: dict[str, Any] | None = None,
) -> DeepLabV2:
    """DeepLab v1/v2: one rate is a field-of-view head (fc6 ``kernel`` x ``kernel`` at that rate,
    ``width`` channels; 3x3, 12, 1024 is LargeFOV), several rates an ASPP whose branches are
    summed (``branch = "fc"``: a 3x3 field-of-view head per rate, as on VGG-16; ``"direct"``: one
    3x3 convolution to the classes per rate, as on ResNet-101). ``rates`` and ``width`` are the
    paper's; ``feature_map`` / ``paper_feature_map`` and ``width_scale`` scale them
    (:func:`scaled_rate`), and ``dropout`` (the paper's rate after fc6 and fc7) is scaled with
    the width (:func:`scaled_dropout`)."""
    if not rates or any(r < 1 for r in rates):
        raise ConfigError("rates", f"expected one or more rates >= 1, got {list(rates)}")
    if kernel < 1:
        raise ConfigError("kernel", f"expected a kernel size >= 1, got {kernel}")
    if branch not in ("fc", "direct"):
        raise ConfigError("branch", f"expected 'fc' or 'direct', got {branch!r}")
    if not 0 < width_scale <= 1:
        raise ConfigError("width_scale", f"expected a factor in (0, 1], got {width_scale}")
    if feature_map is not None and feature_map < 1:
        raise ConfigError("feature_map", f"expected the top map's side in cells (>= 1), got {feature_map}")
    if not 0 <= dropout < 1:
        raise ConfigError("dropout", f"expected a probability in [0, 1), got {dropout}")
    if len(rates) > 1 and kernel != 3:
        raise ConfigError(
            "kernel", "ASPP branches are 3x3 (DeepLab v2); the kernel applies to a single field-of-view head"
        )
    net = build_backbone(backbone, backbone_options)
    in_channels = net.out_channels[net.top]
    used = [scaled_rate(r, feature_map, paper_feature_map, kernel) for r in rates]
    channels = max(1, round(width * width_scale))
    used_dropout = scaled_dropout(dropout, width_scale)

    def branch_for(rate: int) -> nn.Module:
        if branch == "direct":
            return _conv(in_channels, num_classes, 3, rate)
        return FieldOfViewHead(in_channels, num_classes, kernel=kernel, rate=rate, width=channels, dropout=used_dropout)

    head = branch_for(used[0]) if len(used) == 1 else SummedASPP([branch_for(r) for r in used])
    info = {
        "paper_rates": list(rates),
        "rates": used,
        "kernel": kernel,
        "paper_width": width,
        "width": channels,
        "branch": branch,
        "paper_dropout": dropout,
        "dropout": round(used_dropout, 6),
        "feature_map": feature_map,
        "paper_feature_map": paper_feature_map,
    }
    return DeepLabV2(net, head, info)
