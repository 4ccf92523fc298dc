"""PSPNet's dilated ResNet-50 (deep stem), the trunk of PSPNet and ICNet."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torchvision.models.resnet import Bottleneck
from torchvision.ops import Conv2dNormActivation

from seg_core.backbones.base import StagedBackbone, bottleneck_stage
from seg_core.registry import BACKBONES, ConfigError

_PSP_DILATIONS = {8: (1, 1, 2, 4), 16: (1, 1, 1, 2), 32: (1, 1, 1, 1)}  # res2..res5


def _width(channels: int, multiplier: float) -> int:
    return max(1, int(round(channels * multiplier)))


def dilated_resnet50(*, width: float = 1.0, output_stride: int = 8) -> StagedBackbone:
    """PSPNet's ResNet-50 (Zhao et al. 2017): deep stem (3x3 s2 64, 3x3 64, 3x3 128, max pool),
    stages of 3/4/6/3 bottlenecks; res4/res5 dilate instead of striding beyond
    ``output_stride``. Every block of a dilated stage, the first included, uses the stage's
    full dilation (res4: 2, res5: 4 at output stride 8), as the official PSPNet/ICNet models
    do; torchvision halves the first block's rate instead. ``width`` scales every channel count
    (0.5 = ICNet's half-channel PSPNet-50). Blocks stride on the 3x3 (ResNet v1.5; the official
    Caffe models stride the first 1x1)."""
    if output_stride not in _PSP_DILATIONS:
        raise ConfigError("output_stride", f"expected 8, 16 or 32, got {output_stride}")
    if not 0 < width <= 4:
        raise ConfigError("width", f"expected a multiplier in (0, 4], got {width}")
    c1, c2 = _width(64, width), _width(128, width)
    stem = nn.Sequential(
        Conv2dNormActivation(3, c1, 3, stride=2),
        Conv2dNormActivation(c1, c1, 3),
        Conv2dNormActivation(c1, c2, 3),
        nn.MaxPool2d(3, 2, 1),
    )
    dilations = _PSP_DILATIONS[output_stride]
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    inplanes, strides, total = c2, [], 4
    for i, (blocks, base) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        planes = _width(base, width)
        stride = 1 if i == 0 or dilations[i] > 1 else 2
        total *= stride
        stages[f"layer{i + 1}"] = bottleneck_stage(inplanes, planes, blocks, stride, [dilations[i]] * blocks)
        inplanes = planes * Bottleneck.expansion
        strides.append(total)
    return StagedBackbone(stem, stages, [_width(b, width) * 4 for b in (64, 128, 256, 512)], strides, list(dilations))


@BACKBONES.register("dilated_resnet50")
def dilated_resnet50_backbone(
    *, width: float = 1.0, output_stride: int = 8, pretrained: str | None = None
) -> StagedBackbone:
    """PSPNet's dilated ResNet-50 as a registered backbone (the trunk PSPNet and ICNet load)."""
    if pretrained is not None:
        raise ConfigError(
            "pretrained", "dilated_resnet50 has no published weights here; the mini scale pretrains its own"
        )
    return dilated_resnet50(width=width, output_stride=output_stride)
