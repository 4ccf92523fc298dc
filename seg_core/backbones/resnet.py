"""torchvision ResNet-18/34/50/101/152 as staged backbones. Output stride 8/16/32 through
``replace_stride_with_dilation``: torchvision's convention, not DeepLab's. A dilated stage keeps
its resolution, but its *first* unit runs at the previous stage's rate (at output stride 8:
layer3 at 1, 2, 2, ..., layer4 at 2, 4, 4), where DeepLab v2/v3 run every unit of a dilated
stage at its full rate (layer3 all at 2, layer4 all at 4): for DeepLab's ResNet use
:func:`~seg_core.backbones.cascaded.cascaded_resnet` (``depth = 101``), which does. torchvision's ``BasicBlock`` cannot dilate, so
ResNet-18/34 support output stride 32 only. ImageNet weights are named by their torchvision enum
(``"IMAGENET1K_V2"``)."""

from __future__ import annotations

from collections import OrderedDict

import torchvision
from torch import nn

from seg_core.backbones.base import StagedBackbone, _cumulative, atrous_schedule
from seg_core.registry import BACKBONES, ConfigError

_DILATION_FOR_STRIDE = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}


def _torchvision_weights(arch: str, pretrained: str | None):
    if pretrained is None:
        return None
    enum = torchvision.models.get_model_weights(arch)
    try:
        return enum[pretrained]
    except KeyError:
        known = ", ".join(w.name for w in enum)
        raise ConfigError("pretrained", f"unknown weights {pretrained!r} for {arch}; known: {known}") from None


def _torchvision_resnet(depth: int, output_stride: int, pretrained: str | None) -> StagedBackbone:
    if output_stride not in _DILATION_FOR_STRIDE:
        raise ConfigError("output_stride", f"expected 8, 16 or 32, got {output_stride}")
    if depth in (18, 34) and output_stride != 32:
        raise ConfigError(
            "output_stride",
            f"resnet{depth} uses BasicBlock, which torchvision cannot dilate: "
            "only 32 is supported (use resnet50 or deeper)",
        )
    weights = _torchvision_weights(f"resnet{depth}", pretrained)
    kwargs = {} if depth in (18, 34) else {"replace_stride_with_dilation": _DILATION_FOR_STRIDE[output_stride]}
    net = getattr(torchvision.models, f"resnet{depth}")(weights=weights, **kwargs)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = OrderedDict((f"layer{i}", getattr(net, f"layer{i}")) for i in range(1, 5))
    expansion = 1 if depth in (18, 34) else 4
    widths = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
    strides, dilations = atrous_schedule((1, 2, 2, 2), output_stride, stem_stride=4)
    return StagedBackbone(stem, stages, widths, _cumulative(strides, 4), dilations)


def _register_resnet(depth: int) -> None:
    @BACKBONES.register(f"resnet{depth}", check_weights=lambda name: _torchvision_weights(f"resnet{depth}", name))
    def build(*, output_stride: int = 32, pretrained: str | None = None) -> StagedBackbone:
        return _torchvision_resnet(depth, output_stride, pretrained)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"torchvision ResNet-{depth} as a staged backbone."


for _depth in (18, 34, 50, 101, 152):
    _register_resnet(_depth)
