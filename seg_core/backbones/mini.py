"""The CPU-sized ResNet of the mini scale (``mini_resnet``): torchvision ``BasicBlock`` stages
(the GCN tables), or ``Bottleneck`` stages that trade stride for dilation down to any output
stride, with multi-grid rates in the last stage (DeepLab)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import Conv2dNormActivation

from seg_core.backbones.base import StagedBackbone, _cumulative, atrous_schedule, bottleneck_stage
from seg_core.registry import BACKBONES, ConfigError


def _basic_stage(in_channels: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_channels != width:
        downsample = nn.Sequential(nn.Conv2d(in_channels, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))
    layers = [BasicBlock(in_channels, width, stride, downsample)]
    layers += [BasicBlock(width, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


@BACKBONES.register("mini_resnet")
def mini_resnet(
    *,
    stem_width: int = 32,
    widths: Sequence[int] = (32, 64, 128),
    blocks: Sequence[int] = (1, 1, 1),
    strides: Sequence[int] = (1, 2, 2),
    block: str = "basic",
    output_stride: int | None = None,
    multi_grid: Sequence[int] | None = None,
    pretrained: str | None = None,
) -> StagedBackbone:
    """CPU-sized ResNet: a 3x3 stem (stride 1) and stages of torchvision blocks.

    The default (stem 32; stages 32/64/128 of one ``BasicBlock``, strides 1/2/2) has output
    stride 4, so a 64 px image gives a 16x16 top map: the geometry of the GCN paper's 512 px
    input at stride 32. Its theoretical receptive field is 25 px (:func:`receptive_field`).

    ``block = "bottleneck"`` builds ``Bottleneck`` stages (``widths`` are their output
    channels, ``widths / 4`` inside), which can dilate: ``output_stride`` below the product of
    ``strides`` turns the later strides into dilation (:func:`atrous_schedule`), and
    ``multi_grid`` (DeepLab v3's (r1, r2, r3), one rate per block of the last stage) multiplies
    the last stage's dilation block by block. With ``"basic"`` blocks ``output_stride`` must
    equal the product of the strides. ``pretrained`` is not supported: the mini scale pretrains.
    """
    if not (len(widths) == len(blocks) == len(strides)) or not widths:
        raise ConfigError(
            "widths",
            "widths, blocks and strides must be non-empty and of equal length; "
            f"got {list(widths)}, {list(blocks)}, {list(strides)}",
        )
    if any(b < 1 for b in blocks):
        raise ConfigError("blocks", f"expected integers >= 1, got {list(blocks)}")
    if any(s not in (1, 2) for s in strides):
        raise ConfigError("strides", f"expected 1 or 2 per stage, got {list(strides)}")
    if any(w < 1 for w in widths) or stem_width < 1:
        raise ConfigError("widths", f"expected positive widths, got {list(widths)} (stem {stem_width})")
    if block not in ("basic", "bottleneck"):
        raise ConfigError("block", f"expected 'basic' or 'bottleneck', got {block!r}")
    if pretrained is not None:
        raise ConfigError("pretrained", "mini_resnet has no published weights; the mini scale pretrains its own")
    stage_strides, dilations = atrous_schedule(strides, output_stride)
    if multi_grid is not None:
        if block != "bottleneck":
            raise ConfigError("multi_grid", "needs block = 'bottleneck' (BasicBlock cannot dilate)")
        if len(multi_grid) != blocks[-1] or any(r < 1 for r in multi_grid):
            raise ConfigError(
                "multi_grid",
                f"expected one rate >= 1 per block of the last stage ({blocks[-1]}), got {list(multi_grid)}",
            )
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = stem_width
    for i, (width, n, s, d) in enumerate(zip(widths, blocks, stage_strides, dilations), start=1):
        if block == "basic":
            if d > 1:
                raise ConfigError(
                    "output_stride",
                    f"{output_stride} needs dilation, which BasicBlock cannot do; "
                    "use block = 'bottleneck' or a larger output_stride",
                )
            stages[f"layer{i}"] = _basic_stage(c_in, width, n, s)
        else:
            if width % Bottleneck.expansion:
                raise ConfigError("widths", f"bottleneck widths must be multiples of 4, got {width}")
            rates = [d] * n
            if multi_grid is not None and i == len(widths):
                rates = [d * r for r in multi_grid]
            stages[f"layer{i}"] = bottleneck_stage(c_in, width // Bottleneck.expansion, n, s, rates)
        c_in = width
    stem = Conv2dNormActivation(3, stem_width, 3)
    return StagedBackbone(stem, stages, list(widths), _cumulative(stage_strides), dilations)
