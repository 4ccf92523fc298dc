"""DeepLab v3's cascaded ResNet (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic
Image Segmentation", Sec. 3.2 and Fig. 3).

ResNet's block1-block4 (torchvision's layer1-layer4), the pretrained trunk; a model may follow
it with copies of block4 cascaded as block5-block7 (:func:`block4_copies`: three bottleneck units
each, 2048 channels at full width, new layers that no pretraining covers, as in the paper). Every
block after block1 nominally halves the resolution, so after the stride-4 stem the output stride
could reach 4 x 2^6 = 256 with block7 (v3 Table 1); :func:`set_output_stride` trades the strides
past a chosen output stride for dilation over the trunk and the copies together, as
``atrous_schedule`` does for every trunk here.

* **All units of a dilated block run at the block's full rate.** DeepLab's reference ResNet puts
  a block's stride on its *last* unit, so the unit whose stride is dropped ends the previous
  block and every unit of the next runs at the doubled rate; torchvision puts the stride on the
  *first* unit and (``replace_stride_with_dilation``) keeps that unit at the previous rate. We
  follow DeepLab: the full rate on every unit of the block.
* **Multi-grid** (Sec. 3.2, Tables 3 and 5): in block4 and every block after it, unit ``j`` of
  three runs at ``rate x multi_grid[j]``; ``(1, 2, 4)`` at output stride 16 gives block4 rates
  2, 4, 8.
* **block5-7's shortcuts are identities** (:class:`Subsample`). A copy of block4 takes and gives
  the same depth (2048 channels at full width), and DeepLab's TF-slim ``bottleneck_v1`` gives a
  unit whose depth equals its input's a shortcut that only subsamples (a 1x1 max pool at the
  unit's stride): no projection, no weights; where the stride is traded for dilation it is the
  identity. A randomly initialised 1x1 projection + BN there (what torchvision builds for a
  strided unit, which we built until issue 27) makes block7's output nearly unrelated to block4's
  before training: centred cosine between the two maps 0.25 with projections against 0.97 with
  identities on the pretrained mini trunk (the review's measurement), 0.03 against 0.99 on a
  random one (ours, 4 images of 128 px). block1's first unit, which changes the depth
  (64 -> 256), keeps its projection, as in ResNet.
* **Parameters do not depend on the output stride**, so a model trained at one output stride can
  be evaluated at another on the same weights (v3 Table 10, v3+ Table 3):
  :func:`set_output_stride` reconfigures a built trunk in place.

``width`` scales every channel count (the mini scale), ``units`` the units of block1-4 (ResNet-50:
3, 4, 6, 3; ResNet-101: 3, 4, 23, 3). ImageNet weights (torchvision's enums, from the local torch
hub cache) exist for the full-width ResNet-50/101 trunk; block5-7 are new and start from
torchvision's initialisation. Because the output stride and the multi-grid do not change the
weights, a model sets them (and adds block5-7) on a trunk built and pretrained once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck

from seg_core.backbones.base import StagedBackbone, _cumulative, atrous_schedule, bottleneck_stage
from seg_core.registry import BACKBONES, ConfigError

UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
NOMINAL_STRIDES = (1, 2, 2, 2, 2, 2, 2)  # block1 ... block7, after the stem's 4
STEM_STRIDE = 4
GRID_FROM = 3  # multi-grid applies from block4 (index 3) on
EXTRA_UNITS = 3  # block5-7: three units each, as block4


def _weights(depth: int, pretrained: str | None):
    if pretrained is None:
        return None
    enum = torchvision.models.get_model_weights(f"resnet{depth}")
    try:
        return enum[pretrained]
    except KeyError:
        known = ", ".join(w.name for w in enum)
        raise ConfigError("pretrained", f"unknown weights {pretrained!r} for resnet{depth}; known: {known}") from None


def set_output_stride(
    backbone: StagedBackbone,
    output_stride: int,
    multi_grid: Sequence[int] = (1, 1, 1),
    extra: Sequence[nn.Sequential] = (),
) -> None:
    """Set the strides and dilations of a cascaded ResNet, and of the ``extra`` blocks that
    follow it (block5-7 of a model: :func:`block4_copies`), for ``output_stride`` and
    ``multi_grid``, in place (the weights are untouched). ``output_stride`` is the stride of the
    last block; the trunk's bookkeeping (``strides``, ``output_stride`` of its top) follows."""
    if len(multi_grid) != EXTRA_UNITS or min(multi_grid) < 1:
        raise ConfigError("multi_grid", f"expected three unit rates >= 1, e.g. [1, 2, 4], got {list(multi_grid)}")
    stages = [backbone.stages[name] for name in backbone.stage_names] + list(extra)
    strides, dilations = atrous_schedule(NOMINAL_STRIDES[: len(stages)], output_stride, stem_stride=STEM_STRIDE)
    for index, (stage, stride, rate) in enumerate(zip(stages, strides, dilations)):
        grid = tuple(multi_grid) if index >= GRID_FROM else (1,)
        for j, unit in enumerate(stage):
            unit_rate = rate * grid[j % len(grid)]
            unit.conv2.stride = (stride, stride) if j == 0 else (1, 1)
            unit.conv2.dilation = (unit_rate, unit_rate)
            unit.conv2.padding = (unit_rate, unit_rate)
            if j == 0 and isinstance(unit.downsample, Subsample):
                unit.downsample.stride = stride
            elif j == 0 and unit.downsample is not None:
                unit.downsample[0].stride = (stride, stride)
    n = len(backbone.stage_names)
    backbone.strides = dict(zip(backbone.stage_names, _cumulative(strides, STEM_STRIDE)[:n]))
    backbone.dilations = dict(zip(backbone.stage_names, dilations[:n]))
    backbone.output_stride = backbone.strides[backbone.top]
    backbone.multi_grid = tuple(multi_grid)


class Subsample(nn.Module):
    """The shortcut of a unit whose depth equals its input's (TF-slim ``resnet_utils.subsample``):
    every ``stride``-th position, no weights; the identity at stride 1."""

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.stride == 1 else x[..., :: self.stride, :: self.stride]

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


def _block4_copy(channels: int) -> nn.Sequential:
    """Three bottleneck units of ``channels`` in and out, the first with a :class:`Subsample`
    shortcut (its stride and every unit's rate are set by :func:`set_output_stride`)."""
    planes = channels // Bottleneck.expansion
    return nn.Sequential(
        *(Bottleneck(channels, planes, downsample=Subsample() if j == 0 else None) for j in range(EXTRA_UNITS))
    )


def block4_copies(backbone: StagedBackbone, count: int) -> nn.ModuleList:
    """``count`` (0-3) new blocks shaped like block4 (three bottleneck units each, identity
    shortcuts), v3's block5-7: new layers, not part of the pretrained trunk; place them with
    :func:`set_output_stride`."""
    if not 0 <= count <= 3:
        raise ConfigError("extra_blocks", f"expected 0-3 copies of block4 (block5-block7), got {count}")
    return nn.ModuleList(_block4_copy(backbone.out_channels[backbone.top]) for _ in range(count))


@BACKBONES.register("cascaded_resnet", check_weights=lambda name, options: _weights(options.get("depth", 50), name))
def cascaded_resnet(
    *,
    depth: int = 50,
    output_stride: int = 16,
    multi_grid: Sequence[int] = (1, 1, 1),
    width: float = 1.0,
    units: Sequence[int] | None = None,
    pretrained: str | None = None,
) -> StagedBackbone:
    """ResNet-``depth`` block1-4 at ``output_stride`` (4 ... 32 on its own; up to 256 with
    block5-7, :func:`block4_copies`) with ``multi_grid`` unit rates in block4; see the module docstring."""
    if depth not in UNITS:
        raise ConfigError("depth", f"expected one of {sorted(UNITS)}, got {depth}")
    if not 0 < width <= 1:
        raise ConfigError("width", f"expected a factor in (0, 1], got {width}")
    units = tuple(units) if units is not None else UNITS[depth]
    if len(units) != 4 or min(units) < 1:
        raise ConfigError("units", f"expected four unit counts >= 1 (block1-block4), got {list(units)}")
    if pretrained is not None and (width != 1 or units != UNITS[depth]):
        raise ConfigError("pretrained", f"ImageNet weights exist for the full-width ResNet-{depth} only")
    planes = [max(1, round(p * width)) for p in (64, 128, 256, 512)]
    stem_width = max(1, round(64 * width))
    if width == 1 and units == UNITS[depth]:  # torchvision's trunk, ImageNet weights where asked
        net = getattr(torchvision.models, f"resnet{depth}")(weights=_weights(depth, pretrained))
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        blocks = [getattr(net, f"layer{i}") for i in range(1, 5)]
    else:
        stem = nn.Sequential(
            nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        blocks, inplanes = [], stem_width
        for p, n, s in zip(planes, units, NOMINAL_STRIDES):
            blocks.append(bottleneck_stage(inplanes, p, n, s, [1] * n))
            inplanes = p * 4
    names = [f"block{i}" for i in range(1, len(blocks) + 1)]
    channels = [p * 4 for p in planes]
    backbone = StagedBackbone(
        stem, OrderedDict(zip(names, blocks)), channels, _cumulative(NOMINAL_STRIDES[: len(blocks)], STEM_STRIDE)
    )
    set_output_stride(backbone, output_stride, multi_grid)
    return backbone
