"""The ResNet-GCN trunks of Large Kernel Matters (Table 6): bottlenecks whose 1x1 + 3x3 are
replaced by a GCN with BN + ReLU after every 1-D convolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from seg_core.backbones.base import StagedBackbone
from seg_core.backbones.mini import mini_resnet
from seg_core.backbones.resnet import _torchvision_resnet
from seg_core.registry import BACKBONES, ConfigError


class FactorizedLargeKernel(nn.Module):
    """The GCN of the ResNet-GCN block (Large Kernel Matters, Sec. 4.2 and Fig. 5).

    The two branches of the GCN head ((k x 1, 1 x k) and (1 x k, k x 1)), summed, but with
    BN + ReLU after *every* 1-D convolution, as inside a backbone. A stride applies to the
    first convolution of each branch.
    """

    def __init__(self, in_channels: int, mid_channels: int, k: int, stride: int = 1) -> None:
        super().__init__()
        if k < 1 or k % 2 == 0:
            raise ConfigError("gcn_k", f"expected a positive odd kernel size, got {k}")
        self.left = nn.Sequential(
            Conv2dNormActivation(in_channels, mid_channels, (k, 1), stride=stride),
            Conv2dNormActivation(mid_channels, mid_channels, (1, k)),
        )
        self.right = nn.Sequential(
            Conv2dNormActivation(in_channels, mid_channels, (1, k), stride=stride),
            Conv2dNormActivation(mid_channels, mid_channels, (k, 1)),
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


def gcn_stage(
    in_channels: int, mid_channels: int, out_channels: int, k: int, blocks: int, stride: int
) -> nn.Sequential:
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
    :class:`GCNBottleneck` blocks. Stride 2 on the first block of each of those stages;
    output stride 32 only (the paper's setting). There are no published ImageNet weights."""
    if output_stride != 32:
        raise ConfigError("output_stride", f"resnet50_gcn supports 32 only, got {output_stride}")
    if pretrained is not None:
        raise ConfigError("pretrained", "resnet50_gcn has no published ImageNet weights")
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
        raise ConfigError("gcn_k", f"expected 1..{len(widths)} kernel sizes (one per GCN stage), got {list(gcn_k)}")
    if gcn_mid is not None and len(gcn_mid) != n:
        raise ConfigError("gcn_mid", f"expected one width per GCN stage ({n}), got {list(gcn_mid)}")
    first = len(widths) - n
    for j, name in enumerate(plain.stage_names[first:]):
        i = first + j
        c_in = stem_width if i == 0 else widths[i - 1]
        replaced = 9 * c_in * widths[i] + 9 * widths[i] * widths[i]  # the BasicBlock's two 3x3 convs
        mid = matched_mid_width(c_in, widths[i], gcn_k[j], replaced) if gcn_mid is None else gcn_mid[j]
        plain.stages[name] = gcn_stage(c_in, mid, widths[i], gcn_k[j], blocks[i], strides[i])
    return plain
