"""Segmentation models. The contract every family follows (GCN, DeepLab, ICNet, Gated-SCNN):

* ``model(image, **extra_inputs)`` returns a dict of named outputs: ``"out"`` holds the main
  logits at the input resolution; auxiliary outputs (ICNet's cascade branches, Gated-SCNN's
  boundary map) use other names and are consumed by losses of the same name;
* ``model.backbone`` is a :class:`~seg_core.backbones.StagedBackbone` and
  ``model.decode(features, size)`` maps its stage features to the outputs, so an engine can
  cache frozen-backbone features and train only the decoder;
* ``model.decoder_inputs`` names the stages ``decode`` reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seg_core.backbones import StagedBackbone
from seg_core.registry import BACKBONES, HEADS, MODELS


class SingleHeadSegmenter(nn.Module):
    """One classifier head on the backbone's top feature map, bilinearly upsampled to the input.

    This is the Fig. 4 ablation network of Large Kernel Matters: heads A-D sit on res-5 only
    (Sec. 4.1) and their score map is upsampled to the image size (bilinear,
    ``align_corners=False``).
    """

    def __init__(self, backbone: StagedBackbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.decoder_inputs = (backbone.top,)

    def decode(
        self, features: Mapping[str, torch.Tensor], size: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        logits = self.head(features[self.backbone.top])
        return {"out": F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)}

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.backbone(image), image.shape[-2:])

    def decoder_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())


@MODELS.register("single_head")
def single_head(
    *,
    num_classes: int,
    backbone: str,
    head: str,
    k: int | None = None,
    stack_width: int | None = None,
    backbone_options: dict[str, Any] | None = None,
) -> SingleHeadSegmenter:
    """Backbone + one Fig. 4 head (``pointwise``, ``gcn``, ``trivial``, ``stack3x3``).

    ``k`` is the head's kernel size (ignored by ``pointwise``); ``stack_width`` is Table 4's
    intermediate width m for ``stack3x3`` (default: the backbone's top width, as in Table 3).
    ``backbone_options`` go to the backbone builder (widths, output_stride, pretrained...).
    """
    net = BACKBONES.build(backbone, **(backbone_options or {}))
    head_kwargs: dict[str, Any] = {"in_channels": net.out_channels[net.top], "num_classes": num_classes}
    if head != "pointwise":
        if k is None:
            raise ValueError(f"head {head!r} needs a kernel size k")
        head_kwargs["k"] = k
    if head == "stack3x3" and stack_width is not None:
        head_kwargs["width"] = stack_width
    elif stack_width is not None:
        raise ValueError(f"stack_width applies to head 'stack3x3' only, not {head!r}")
    return SingleHeadSegmenter(net, HEADS.build(head, **head_kwargs))
