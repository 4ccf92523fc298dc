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

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seg_core.backbones import StagedBackbone
from seg_core.heads import BoundaryRefinement, GlobalConvolution, PointwiseClassifier
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
    """Backbone + one Fig. 4 head (``pointwise``, ``gcn``, ``trivial``, ``stack3x3``, ``gcn_br``).

    ``k`` is the head's kernel size (ignored by ``pointwise``); ``stack_width`` is Table 4's
    intermediate width m for ``stack3x3`` (default: the backbone's top width, as in Table 3).
    ``backbone_options`` go to the backbone builder (widths, output_stride, pretrained...).
    """
    net = BACKBONES.build(backbone, **(backbone_options or {}))
    return SingleHeadSegmenter(
        net, build_head(head, in_channels=net.out_channels[net.top], num_classes=num_classes, k=k, stack_width=stack_width)
    )


def build_head(
    head: str, *, in_channels: int, num_classes: int, k: int | None = None, stack_width: int | None = None
) -> nn.Module:
    """One Fig. 4 head by name, checking which options it takes (used by :func:`single_head`,
    and on its own to count a head's weights at the paper's configuration)."""
    head_kwargs: dict[str, Any] = {"in_channels": in_channels, "num_classes": num_classes}
    if head != "pointwise":
        if k is None:
            raise ValueError(f"head {head!r} needs a kernel size k")
        head_kwargs["k"] = k
    if head == "stack3x3" and stack_width is not None:
        head_kwargs["width"] = stack_width
    elif stack_width is not None:
        raise ValueError(f"stack_width applies to head 'stack3x3' only, not {head!r}")
    return HEADS.build(head, **head_kwargs)


# ------------------------------------------------------------- Large Kernel Matters, Fig. 2
class ScoreUpsample(nn.Module):
    """x2 upsampling of score maps between pyramid levels (Fig. 2).

    ``"deconv"``: a learnable 4x4 stride-2 transposed convolution (classes -> classes), as in
    the paper, initialised to per-class bilinear interpolation (the FCN convention: bilinear
    kernel on the diagonal, zeros elsewhere) and without bias;
    ``"bilinear"``: fixed bilinear interpolation (``align_corners=False``), as in most public
    re-implementations. Either way the result is cropped/resized to the requested size, which
    handles odd feature-map sizes.
    """

    def __init__(self, channels: int, mode: str) -> None:
        super().__init__()
        if mode not in ("deconv", "bilinear"):
            raise ValueError(f"upsample must be 'deconv' or 'bilinear', got {mode!r}")
        self.mode = mode
        self.deconv = None
        if mode == "deconv":
            self.deconv = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False)
            with torch.no_grad():
                f = torch.tensor([0.25, 0.75, 0.75, 0.25])
                self.deconv.weight.zero_()
                for c in range(channels):
                    self.deconv.weight[c, c] = f[:, None] * f[None, :]

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        size = tuple(size)
        if self.deconv is None:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        y = self.deconv(x)
        if tuple(y.shape[-2:]) != size:
            y = y[..., : size[0], : size[1]]
            if tuple(y.shape[-2:]) != size:  # target larger than 2x (not a x2 step): resize
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y


def _stage_head(kind: str, in_channels: int, num_classes: int, k: int) -> nn.Module:
    if kind == "gcn":
        return GlobalConvolution(in_channels, num_classes, k)
    if kind == "pointwise":
        return PointwiseClassifier(in_channels, num_classes)
    raise ValueError(f"stage head must be 'gcn' or 'pointwise', got {kind!r}")


class GCNSegmenter(nn.Module):
    """The full network of Large Kernel Matters (Peng et al. 2017, Fig. 2).

    Every backbone stage (res2..res5 on a ResNet) gets a GCN (or, for the baseline, a 1x1
    classifier) and a BR. From the deepest stage down, the running score map is upsampled x2,
    added to the next stage's score map and refined by another BR. Below the shallowest stage
    (stride 4 on a ResNet) the map is upsampled x2 and refined by a BR until full resolution:
    on a ResNet that is 4 + 3 + 2 = 9 BRs, as in the paper. ``refine=False`` drops every BR
    (the "GCN" row of Table 7); ``stage_head="pointwise"`` with ``refine=False`` is its baseline.

    Where the backbone keeps resolution between stages (dilated stages), the x2 step becomes
    a plain addition; a final bilinear resize guarantees the input size.
    """

    def __init__(
        self, backbone: StagedBackbone, num_classes: int, *, k: int, stage_head: str, refine: bool, upsample: str
    ) -> None:
        super().__init__()
        self.backbone = backbone
        names = backbone.stage_names
        self.decoder_inputs = tuple(names)

        def br() -> nn.Module:  # a fresh module per call: no two BRs share weights
            return BoundaryRefinement(num_classes) if refine else nn.Identity()

        self.heads = nn.ModuleDict({s: _stage_head(stage_head, backbone.out_channels[s], num_classes, k) for s in names})
        self.stage_refine = nn.ModuleDict({s: br() for s in names})
        # fusion into stage s (all but the deepest): upsample the deeper map, add, refine
        self.fuse_upsample = nn.ModuleDict({s: ScoreUpsample(num_classes, upsample) for s in names[:-1]})
        self.fuse_refine = nn.ModuleDict({s: br() for s in names[:-1]})
        shallowest = backbone.strides[names[0]]
        steps = max(0, int(round(math.log2(shallowest))))
        if 2**steps != shallowest:
            raise ValueError(f"the shallowest stage's stride must be a power of 2, got {shallowest}")
        self.final_upsample = nn.ModuleList([ScoreUpsample(num_classes, upsample) for _ in range(steps)])
        self.final_refine = nn.ModuleList([br() for _ in range(steps)])

    def decode(self, features: Mapping[str, torch.Tensor], size: Sequence[int]) -> dict[str, torch.Tensor]:
        names = self.backbone.stage_names
        score = None
        for s in reversed(names):
            local = self.stage_refine[s](self.heads[s](features[s]))
            if score is None:
                score = local
                continue
            if score.shape[-2:] != local.shape[-2:]:
                score = self.fuse_upsample[s](score, local.shape[-2:])
            score = self.fuse_refine[s](score + local)
        for i, (up, refine) in enumerate(zip(self.final_upsample, self.final_refine)):
            remaining = len(self.final_upsample) - i - 1
            target = (-(-size[0] // 2**remaining), -(-size[1] // 2**remaining)) if remaining else tuple(size)
            score = refine(up(score, target))
        if tuple(score.shape[-2:]) != tuple(size):
            score = F.interpolate(score, size=tuple(size), mode="bilinear", align_corners=False)
        return {"out": score}

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.backbone(image), image.shape[-2:])

    def decoder_parameters(self) -> list[nn.Parameter]:
        backbone = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone]

    def boundary_refinements(self) -> list[BoundaryRefinement]:
        return [m for m in self.modules() if isinstance(m, BoundaryRefinement)]


@MODELS.register("gcn_br")
def gcn_br(
    *,
    num_classes: int,
    backbone: str,
    k: int = 15,
    stage_head: str = "gcn",
    refine: bool = True,
    upsample: str = "deconv",
    backbone_options: dict[str, Any] | None = None,
) -> GCNSegmenter:
    """Fig. 2 network: GCN(k) + BR on every backbone stage, top-down fusion with BRs.

    ``stage_head``: ``"gcn"`` or ``"pointwise"`` (1x1 baseline); ``refine``: use the BRs;
    ``upsample``: ``"deconv"`` (paper) or ``"bilinear"`` (common code).
    """
    net = BACKBONES.build(backbone, **(backbone_options or {}))
    return GCNSegmenter(net, num_classes, k=k, stage_head=stage_head, refine=refine, upsample=upsample)
