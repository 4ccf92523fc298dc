"""VGG-16 as DeepLab uses it (Chen et al., DeepLab v1 Sec. 3.1 and v2 Sec. 4.1): torchvision's
VGG-16 convolutions in five stages (``conv1``..``conv5``, each followed by its max pooling), with
DeepLab's Caffe poolings: a pooling that strides is 3x3, stride 2, padding 1, ceil mode (not
VGG's 2x2), so a 321 px crop gives a 41-cell map at output stride 8 and a 513 px image 65 (2x2
pools: 40 and 64); beyond the output stride a pooling keeps the resolution (3x3, stride 1,
padding 1) and the convolutions after it dilate by the stride it skipped. At output stride 8 that
is DeepLab's network: pool1-3 striding, pool4 and pool5 with stride 1, conv5 at dilation 2; fc6
(the head) then dilates further. Until issue 27 the striding pools were VGG's 2x2. The fully connected layers of VGG are not part of the trunk (DeepLab
re-creates them as the fc6/fc7 of its heads). ImageNet weights: ``pretrained =
"IMAGENET1K_V1"`` (torchvision's enum; the trunk's weights only).
"""

from __future__ import annotations

from collections import OrderedDict

import torchvision
from torch import nn

from seg_core.backbones.base import StagedBackbone, _cumulative, atrous_schedule
from seg_core.registry import BACKBONES, ConfigError

VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _weights(pretrained: str | None):
    if pretrained is None:
        return None
    enum = torchvision.models.get_model_weights("vgg16")
    try:
        return enum[pretrained]
    except KeyError:
        known = ", ".join(w.name for w in enum)
        raise ConfigError("pretrained", f"unknown weights {pretrained!r} for vgg16; known: {known}") from None


@BACKBONES.register("vgg16_atrous", check_weights=_weights)
def vgg16_atrous(*, output_stride: int = 8, pretrained: str | None = None) -> StagedBackbone:
    """VGG-16 in five stages with output stride 8, 16 or 32 (stride traded for dilation)."""
    if output_stride not in (8, 16, 32):
        raise ConfigError("output_stride", f"expected 8, 16 or 32, got {output_stride}")
    features = torchvision.models.vgg16(weights=_weights(pretrained)).features
    strides, dilations = atrous_schedule([2] * 5, output_stride)
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    i = 0
    rate = 1
    for n, (widths, stride, dilation) in enumerate(zip(VGG16_STAGES, strides, dilations), start=1):
        layers: list[nn.Module] = []
        for _ in widths:
            conv = convs[i]
            i += 1
            if rate > 1:  # after a pooling that kept the resolution
                conv.dilation, conv.padding = (rate, rate), (rate, rate)
            layers += [conv, nn.ReLU(inplace=True)]
        layers.append(nn.MaxPool2d(3, 2, 1, ceil_mode=True) if stride == 2 else nn.MaxPool2d(3, 1, 1))
        stages[f"conv{n}"] = nn.Sequential(*layers)
        rate = dilation
    return StagedBackbone(nn.Identity(), stages, [w[-1] for w in VGG16_STAGES], _cumulative(strides), dilations)
