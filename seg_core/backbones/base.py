"""The staged-backbone contract and what every trunk shares: :class:`StagedBackbone`, the atrous
schedule (stride traded for dilation beyond an output stride), torchvision bottleneck stages, and
the theoretical receptive field."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from seg_core.registry import ConfigError


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
