"""Backbones returning their stage features, named like torchvision's ResNet (``layer1``...).

* ``resnet18/34/50/101/152``: torchvision ResNets. Output stride 8/16/32 is set with
  ``replace_stride_with_dilation`` (DeepLab style: the last stages keep their resolution and
  dilate instead). torchvision's ``BasicBlock`` cannot dilate, so ResNet-18/34 support only
  output stride 32. ImageNet weights are named by their torchvision enum (``"IMAGENET1K_V2"``).
* ``mini_resnet``: the CPU-sized ResNet of the mini scale, assembled from torchvision's own
  ``BasicBlock`` with configurable stem width, stage widths, depths and strides.
* ``resnet50_gcn`` / ``mini_resnet_gcn``: the ResNet-GCN backbones of Large Kernel Matters
  (Table 6), whose res4/res5 blocks are :class:`GCNBottleneck` blocks.

Each backbone has ``stage_names`` (shallow to deep), ``out_channels`` and ``strides`` (per
stage) and ``output_stride``; ``forward`` returns an ordered dict ``{stage name: feature map}``.
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
    """Convolution (no bias, "same" padding) -> BatchNorm -> ReLU; the kernel may be 1-D (k, 1)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int | tuple[int, int] = 3
    ) -> None:
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        super().__init__(
            nn.Conv2d(in_channels, out_channels, (kh, kw), stride=stride,
                      padding=((kh - 1) // 2, (kw - 1) // 2), bias=False),
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
        strides: Sequence[int],
    ) -> None:
        super().__init__()
        if not (len(stages) == len(out_channels) == len(strides)):
            raise ValueError("one out_channels and one stride per stage")
        self.stem = stem
        self.stages = nn.ModuleDict(stages)
        self.stage_names = list(stages)
        self.out_channels = dict(zip(self.stage_names, out_channels))
        self.strides = dict(zip(self.stage_names, strides))
        self.output_stride = strides[-1]

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


def _resnet_strides(output_stride: int) -> list[int]:
    """Strides of layer1..layer4 of a ResNet whose last stages dilate beyond ``output_stride``."""
    return [min(s, output_stride) for s in (4, 8, 16, 32)]


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
    return StagedBackbone(stem, stages, widths, _resnet_strides(output_stride))


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
    return StagedBackbone(ConvBNReLU(3, stem_width), stages, list(widths), _cumulative(strides))


def _cumulative(strides: Sequence[int]) -> list[int]:
    out, total = [], 1
    for s in strides:
        total *= s
        out.append(total)
    return out


# ------------------------------------------------------------------ ResNet-GCN (Table 6)
class FactorizedLargeKernel(nn.Module):
    """The GCN of the ResNet-GCN block (Large Kernel Matters, Sec. 4.2 and Fig. 5).

    The two branches of :class:`~seg_core.heads.GlobalConvolution` ((k x 1, 1 x k) and
    (1 x k, k x 1)), summed, but with BN + ReLU after *every* 1-D convolution, as inside a
    backbone. A stride applies to the first convolution of each branch.
    """

    def __init__(self, in_channels: int, mid_channels: int, k: int, stride: int = 1) -> None:
        super().__init__()
        if k < 1 or k % 2 == 0:
            raise ValueError(f"GCN kernel size must be a positive odd integer, got {k}")
        self.left = nn.Sequential(
            ConvBNReLU(in_channels, mid_channels, stride, (k, 1)),
            ConvBNReLU(mid_channels, mid_channels, 1, (1, k)),
        )
        self.right = nn.Sequential(
            ConvBNReLU(in_channels, mid_channels, stride, (1, k)),
            ConvBNReLU(mid_channels, mid_channels, 1, (k, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.left(x) + self.right(x)


class GCNBottleneck(nn.Module):
    """ResNet-GCN residual block (Large Kernel Matters, Sec. 4.2, Fig. 5, Table 6).

    A bottleneck whose 1x1 reduction and 3x3 convolution are replaced by a
    :class:`FactorizedLargeKernel` to ``mid_channels``; then a 1x1 projection to
    ``out_channels`` with BN, the residual addition, and a ReLU *after* the addition. The
    shortcut is the identity, or a strided 1x1 convolution + BN when the shape changes.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, k: int, stride: int = 1) -> None:
        super().__init__()
        self.gcn = FactorizedLargeKernel(in_channels, mid_channels, k, stride)
        self.project = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.project(self.gcn(x)) + self.shortcut(x))


def gcn_stage(in_channels: int, mid_channels: int, out_channels: int, k: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` *distinct* GCN blocks (a fresh module each: ``[block] * n`` would share weights)."""
    layers = [GCNBottleneck(in_channels, mid_channels, out_channels, k, stride)]
    layers += [GCNBottleneck(out_channels, mid_channels, out_channels, k) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def gcn_block_weights(in_channels: int, mid_channels: int, out_channels: int, k: int) -> int:
    """Convolution weights of a GCN block's residual branch (shortcut excluded), closed form."""
    return 2 * k * mid_channels * (in_channels + mid_channels) + mid_channels * out_channels


def matched_mid_width(in_channels: int, out_channels: int, k: int, replaced_weights: int) -> int:
    """Largest GCN mid width whose residual branch has at most ``replaced_weights`` weights.

    The paper's widths follow this rule: a res4 GCN block (k=5, 85 mid) has 0.92x and a res5
    block (k=7, 128 mid) 0.93x the weights of the bottleneck it replaces.
    """
    mid = 1
    while gcn_block_weights(in_channels, mid + 1, out_channels, k) <= replaced_weights:
        mid += 1
    return mid


@BACKBONES.register("resnet50_gcn")
def resnet50_gcn(*, output_stride: int = 32, pretrained: str | None = None) -> StagedBackbone:
    """ResNet-50-GCN (Table 6): torchvision ResNet-50 with res4 (``layer3``: 6 blocks, k=5,
    85 mid channels) and res5 (``layer4``: 3 blocks, k=7, 128 mid channels) made of
    :class:`GCNBottleneck` blocks. Stride 2 on the first block of each of those stages (as
    torchvision places it on the 3x3); output stride 32 only (the paper's setting). There are
    no published ImageNet weights for it.
    """
    if output_stride != 32:
        raise ValueError(f"resnet50_gcn supports output_stride=32 only, got {output_stride}")
    if pretrained is not None:
        raise ValueError("resnet50_gcn has no published ImageNet weights")
    net = _torchvision_resnet(50, 32, None)
    net.stages["layer3"] = gcn_stage(512, 85, 1024, k=5, blocks=6, stride=2)
    net.stages["layer4"] = gcn_stage(1024, 128, 2048, k=7, blocks=3, stride=2)
    return net


@BACKBONES.register("mini_resnet_gcn")
def mini_resnet_gcn(
    *,
    stem_width: int = 32,
    widths: Sequence[int] = (32, 64, 128),
    blocks: Sequence[int] = (1, 1, 1),
    strides: Sequence[int] = (1, 2, 2),
    gcn_k: Sequence[int] = (5, 7),
    gcn_mid: Sequence[int] | None = None,
    pretrained: str | None = None,
) -> StagedBackbone:
    """:func:`mini_resnet` whose last ``len(gcn_k)`` stages are GCN stages (Table 6, mini).

    As in the paper (res4 and res5 of four stages) the *last two* stages use GCN blocks with
    k = 5 then 7. The mini plain network is made of BasicBlocks, not bottlenecks, so the
    paper's 85/128 mid widths do not transfer as fractions; by default each mid width follows
    the paper's rule instead: the largest width whose block has no more weights than the
    plain block it replaces (:func:`matched_mid_width`), so both backbones have similar
    parameters and MACs.
    """
    plain = mini_resnet(stem_width=stem_width, widths=widths, blocks=blocks, strides=strides, pretrained=pretrained)
    n = len(gcn_k)
    if not 1 <= n <= len(widths):
        raise ValueError(f"gcn_k needs 1..{len(widths)} kernel sizes (one per GCN stage), got {list(gcn_k)}")
    if gcn_mid is not None and len(gcn_mid) != n:
        raise ValueError(f"gcn_mid needs one width per GCN stage ({n}), got {list(gcn_mid)}")
    first = len(widths) - n
    for j, name in enumerate(plain.stage_names[first:]):
        i = first + j
        c_in = stem_width if i == 0 else widths[i - 1]
        replaced = 9 * c_in * widths[i] + 9 * widths[i] * widths[i]  # the BasicBlock's two 3x3 convs
        mid = matched_mid_width(c_in, widths[i], gcn_k[j], replaced) if gcn_mid is None else gcn_mid[j]
        plain.stages[name] = gcn_stage(c_in, mid, widths[i], gcn_k[j], blocks[i], strides[i])
    return plain


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
