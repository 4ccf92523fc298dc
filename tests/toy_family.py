"""A toy model family, written as a new family would be in ``seg_core/models/``: its modules, a
private assembler and a registered builder. Used only by test_toy_family.py."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from seg_core.contract import Segmenter
from seg_core.layers import build_backbone
from seg_core.registry import MODELS, ConfigError


class ToyFCN(Segmenter):
    """Backbone, one 3x3 convolution to the classes on the top map, bilinear upsampling."""

    def __init__(self, backbone, num_classes: int, kernel: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(backbone.out_channels[backbone.top], num_classes, kernel, padding=kernel // 2)
        self.decoder_inputs = (backbone.top,)

    def decode(self, features, size, **extra):
        return {
            "out": F.interpolate(
                self.head(features[self.backbone.top]), size=tuple(size), mode="bilinear", align_corners=False
            )
        }

    def parts(self):
        return {"backbone": ("backbone",), "head": ("head",)}


@MODELS.register(
    "toy_fcn", example={"backbone": "mini_resnet", "backbone_options": {"stem_width": 4, "widths": [4, 4, 8]}}
)
def toy_fcn(
    *, num_classes: int, backbone: str, kernel: int = 3, backbone_options: dict[str, Any] | None = None
) -> ToyFCN:
    if kernel not in (1, 3, 5):
        raise ConfigError("kernel", f"expected 1, 3 or 5, got {kernel}")
    return ToyFCN(build_backbone(backbone, backbone_options), num_classes, kernel)
