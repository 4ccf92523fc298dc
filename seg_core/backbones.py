"""Backbones returning their stage features, named like torchvision's ResNet (``layer1``...).

* ``resnet18/34/50/101/152``: torchvision ResNets. Output stride 8/16/32 is set with
  ``replace_stride_with_dilation`` (DeepLab style: the last stages keep their resolution and
  dilate instead). torchvision's ``BasicBlock`` cannot dilate, so ResNet-18/34 support only
  output stride 32. ImageNet weights are named by their torchvision enum (``"IMAGENET1K_V2"``).
* ``mini_resnet``: the CPU-sized ResNet of the mini scale, assembled from torchvision's own
  ``BasicBlock`` with configurable stem width, stage widths, depths and strides.

Each backbone has ``stage_names`` (shallow to deep), ``out_channels`` (per stage) and
``output_stride``; ``forward`` returns an ordered dict ``{stage name: feature map}``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from seg_core.registry import BACKBONES


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class StagedBackbone(nn.Module):
    """A stem followed by named stages; returns every stage's output."""

    def __init__(
        self,
        stem: nn.Module,
        stages: OrderedDict[str, nn.Module],
        out_channels: Sequence[int],
        output_stride: int,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleDict(stages)
        self.stage_names = list(stages)
        self.out_channels = dict(zip(self.stage_names, out_channels))
        self.output_stride = output_stride

    @property
    def top(self) -> str:
        return self.stage_names[-1]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        x = self.stem(x)
        for name in self.stage_names:
            x = self.stages[name](x)
            features[name] = x
        return features


_DILATION_FOR_STRIDE = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}


def _torchvision_resnet(depth: int, output_stride: int, pretrained: str | None) -> StagedBackbone:
    if output_stride not in _DILATION_FOR_STRIDE:
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    if depth in (18, 34) and output_stride != 32:
        raise ValueError(
            f"resnet{depth} uses BasicBlock, which torchvision cannot dilate: "
            "only output_stride=32 is supported (use resnet50 or deeper)"
        )
    builder = getattr(torchvision.models, f"resnet{depth}")
    weights = None
    if pretrained is not None:
        enum = torchvision.models.get_model_weights(f"resnet{depth}")
        try:
            weights = enum[pretrained]
        except KeyError:
            known = ", ".join(w.name for w in enum)
            raise ValueError(f"unknown weights {pretrained!r} for resnet{depth}; known: {known}") from None
    kwargs = {} if depth in (18, 34) else {
        "replace_stride_with_dilation": _DILATION_FOR_STRIDE[output_stride]
    }
    net = builder(weights=weights, **kwargs)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = OrderedDict((f"layer{i}", getattr(net, f"layer{i}")) for i in range(1, 5))
    expansion = 1 if depth in (18, 34) else 4
    widths = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
    return StagedBackbone(stem, stages, widths, output_stride)


def _register_resnet(depth: int) -> None:
    @BACKBONES.register(f"resnet{depth}")
    def build(*, output_stride: int = 32, pretrained: str | None = None) -> StagedBackbone:
        return _torchvision_resnet(depth, output_stride, pretrained)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"torchvision ResNet-{depth} as a staged backbone."


for _depth in (18, 34, 50, 101, 152):
    _register_resnet(_depth)


def _basic_stage(in_channels: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_channels != width:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width)
        )
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
    output_stride: int | None = None,
    pretrained: str | None = None,
) -> StagedBackbone:
    """CPU-sized ResNet from torchvision ``BasicBlock``s: a 3x3 stem (stride 1) and stages.

    The default (stem 32; stages 32/64/128, one block each, strides 1/2/2) has output
    stride 4, so a 64 px image gives a 16x16 top map: the geometry of the paper's 512 px
    input at stride 32. Its theoretical receptive field is 25 px (about 6 top-map cells;
    see :func:`receptive_field`), well below the largest synthetic objects, which is the
    regime the paper's valid-receptive-field argument is about. ``output_stride``, when
    given, must equal the product of ``strides`` (it is a check, the strides decide).
    ``pretrained`` is not supported here (the mini scale pretrains its own weights).
    """
    if not (len(widths) == len(blocks) == len(strides)) or not widths:
        raise ValueError("widths, blocks and strides must be non-empty and of equal length")
    if any(b < 1 for b in blocks) or any(s not in (1, 2) for s in strides):
        raise ValueError(f"blocks must be >= 1 and strides 1 or 2; got {blocks}, {strides}")
    stride = 1
    for s in strides:
        stride *= s
    if output_stride is not None and output_stride != stride:
        raise ValueError(f"output_stride {output_stride} != product of strides {stride}")
    if pretrained is not None:
        raise ValueError("mini_resnet has no published weights; use the pretrain step")
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = stem_width
    for i, (width, n, s) in enumerate(zip(widths, blocks, strides), start=1):
        stages[f"layer{i}"] = _basic_stage(c_in, width, n, s)
        c_in = width
    return StagedBackbone(ConvBNReLU(3, stem_width), stages, list(widths), stride)


def receptive_field(module: nn.Module) -> int:
    """Theoretical receptive field (px) of a plain chain of convolutions and poolings.

    Walks the modules in registration order and assumes they are applied in sequence along
    the deepest path (true for ResNet main paths; shortcuts have smaller fields).
    """
    rf, jump = 1, 1
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k = m.kernel_size if isinstance(m.kernel_size, int) else max(m.kernel_size)
            s = m.stride if isinstance(m.stride, int) else max(m.stride)
            d = m.dilation if isinstance(m.dilation, int) else max(m.dilation)
            if k == 1 and s > 1 and isinstance(m, nn.Conv2d):  # a strided 1x1 shortcut
                continue
            rf += (k - 1) * d * jump
            jump *= s
    return rf
