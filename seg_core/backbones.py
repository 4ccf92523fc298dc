"""Every trunk, as a :class:`StagedBackbone` returning its stage features (``layer1``...).

* ``resnet18/34/50/101/152``: torchvision ResNets. Output stride 8/16/32 through
  ``replace_stride_with_dilation`` (DeepLab's convention: a dilated stage keeps its resolution;
  its first block runs at the previous stage's rate). torchvision's ``BasicBlock`` cannot
  dilate, so ResNet-18/34 support output stride 32 only. ImageNet weights are named by their
  torchvision enum (``"IMAGENET1K_V2"``).
* ``mini_resnet``: the CPU-sized ResNet of the mini scale: torchvision ``BasicBlock`` stages
  (the GCN tables), or ``Bottleneck`` stages that can trade stride for dilation down to any
  output stride, with multi-grid rates in the last stage (DeepLab).
* ``dilated_resnet50``: PSPNet's ResNet-50 with the deep stem, dilated as the official
  PSPNet/ICNet models are (every block of a dilated stage at the stage's full rate).
* ``resnet50_gcn`` / ``mini_resnet_gcn``: the ResNet-GCN trunks of Large Kernel Matters
  (Table 6), whose last stages are :class:`GCNBottleneck` blocks.

A stage that dilates follows :func:`atrous_schedule`: once the cumulative stride reaches the
output stride, later stages keep the resolution and multiply their dilation by the stride they
skip (Chen et al., DeepLab v3, Sec. 3.1).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import Conv2dNormActivation

from seg_core.registry import BACKBONES, ConfigError


class StagedBackbone(nn.Module):
    """A stem followed by named stages; ``forward`` returns every stage's output.

    ``out_channels``, ``strides`` and ``dilations`` are per stage (cumulative stride w.r.t. the
    input; the dilation of the stage's last block); ``output_stride`` is the deepest stride.
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: OrderedDict[str, nn.Module],
        out_channels: Sequence[int],
        strides: Sequence[int],
        dilations: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not (len(stages) == len(out_channels) == len(strides)):
            raise ValueError("one out_channels and one stride per stage")
        self.stem = stem
        self.stages = nn.ModuleDict(stages)
        self.stage_names = list(stages)
        self.out_channels = dict(zip(self.stage_names, out_channels))
        self.strides = dict(zip(self.stage_names, strides))
        self.dilations = dict(zip(self.stage_names, dilations or [1] * len(strides)))
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


def atrous_schedule(
    strides: Sequence[int], output_stride: int | None, stem_stride: int = 1
) -> tuple[list[int], list[int]]:
    """Per-stage (stride, dilation) for a trunk whose stages nominally stride by ``strides``.

    Stages stride as long as the cumulative stride (from ``stem_stride``) stays within
    ``output_stride``; after that a stage keeps the resolution and its dilation grows by the
    stride it skips. ``output_stride=None`` strides everywhere. Raises :class:`ConfigError`
    (key ``output_stride``) when the strides cannot give that output stride.
    """
    total, dilation = stem_stride, 1
    reachable = [stem_stride]
    for s in strides:
        reachable.append(reachable[-1] * s)
    if output_stride is not None and output_stride not in reachable:
        raise ConfigError(
            "output_stride",
            f"expected one of {sorted(set(reachable))} (the strides {list(strides)} "
            f"after a stem of stride {stem_stride}), got {output_stride}",
        )
    out_strides, dilations = [], []
    for s in strides:
        if output_stride is not None and total * s > output_stride:
            dilation *= s
            s = 1
        total *= s
        out_strides.append(s)
        dilations.append(dilation)
    return out_strides, dilations


def _cumulative(strides: Sequence[int], start: int = 1) -> list[int]:
    out, total = [], start
    for s in strides:
        total *= s
        out.append(total)
    return out


# ------------------------------------------------------------------------ torchvision ResNets
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


# ------------------------------------------------------------------------------ mini ResNet
def _basic_stage(in_channels: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_channels != width:
        downsample = nn.Sequential(nn.Conv2d(in_channels, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))
    layers = [BasicBlock(in_channels, width, stride, downsample)]
    layers += [BasicBlock(width, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def bottleneck_stage(inplanes: int, planes: int, blocks: int, stride: int, dilations: Sequence[int]) -> nn.Sequential:
    """``blocks`` distinct torchvision Bottlenecks (output ``4 * planes`` channels); block ``i``
    runs at ``dilations[i]`` (a fresh module each: ``[block] * n`` would share weights)."""
    out = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
    layers = [Bottleneck(inplanes, planes, stride, downsample, dilation=dilations[0])]
    layers += [Bottleneck(out, planes, dilation=d) for d in dilations[1:]]
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


# ----------------------------------------------------------------- PSPNet's dilated ResNet-50
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


# ------------------------------------------------------------------ ResNet-GCN (Table 6)
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
