"""Where a convolution's taps land: the share of a kernel that reads the feature map it runs on.

A k x k filter at rate r on an n x n map reads, at each output cell, the k^2 input cells
``o * stride - padding + t * r`` (t = 0..k-1 per axis). Taps that fall outside the map read the
padding, so on a small map a large kernel or a large rate degenerates: a 3x3 at rate 8 on an 8x8
map keeps only its centre tap everywhere (1/9 of its taps), i.e. it is a 1x1 convolution. The
papers' mechanisms (DeepLab's atrous rates and ASPP, GCN's large kernels, ICNet's low-resolution
branch) are about what those taps see, so a claim about them can only be tested where most taps
land on the map. This module measures that share for every spatial convolution of a model at a
given input size; judging a claim on it is :mod:`ablations.regime`'s.

The share counts positions, not weights: a tap that reads the map at some output cells and the
padding at others counts for the fraction of cells at which it reads the map. Padding of any mode
is outside the map. Counted with one forward pass on whatever device the model is on (the meta
device works: only shapes are needed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ConvTaps:
    """One spatial convolution at one input size: its geometry and how many of its taps, summed
    over output cells, read the map (``valid``) out of all taps at all output cells (``taps``)."""

    kernel: tuple[int, int]
    dilation: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    map_size: tuple[int, int]  # the input map (height, width) in cells
    valid: int
    taps: int

    @property
    def share(self) -> float:
        return self.valid / self.taps


def _axis(n: int, k: int, stride: int, padding: int, dilation: int) -> tuple[int, int]:
    """(valid taps summed over output cells, output cells) along one axis: tap t reads the map
    at the output cells o with 0 <= o * stride - padding + t * dilation < n."""
    out = max((n + 2 * padding - dilation * (k - 1) - 1) // stride + 1, 0)
    valid = 0
    for t in range(k):
        offset = t * dilation - padding
        first = max(0, -(offset // stride))  # smallest o with o * stride + offset >= 0
        last = min(out - 1, (n - 1 - offset) // stride)  # largest o with o * stride + offset <= n - 1
        valid += max(0, last - first + 1)
    return valid, out


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":  # stride 1 by torch's rule; the extra cell of an even span goes right
        return tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size))
    return tuple(conv.padding)


def conv_taps(conv: nn.Conv2d, map_size: tuple[int, int]) -> ConvTaps:
    """The tap count of ``conv`` run on a map of ``map_size`` cells."""
    padding = _padding(conv)
    (valid_h, out_h), (valid_w, out_w) = (
        _axis(n, k, s, p, d) for n, k, s, p, d in zip(map_size, conv.kernel_size, conv.stride, padding, conv.dilation)
    )
    kh, kw = conv.kernel_size
    # taps are separable: the cell (o_h, o_w) reads tap (t_h, t_w) iff each axis does
    return ConvTaps(
        tuple(conv.kernel_size),
        tuple(conv.dilation),
        tuple(conv.stride),
        padding,
        tuple(map_size),
        valid_h * valid_w,
        kh * kw * out_h * out_w,
    )


@torch.no_grad()
def tap_coverage(model: nn.Module, input_size: tuple[int, int]) -> dict[str, ConvTaps]:
    """Every spatial convolution of ``model`` (kernel larger than 1x1) that runs in one forward
    pass of a ``(1, 3, *input_size)`` input, by its qualified module name. A convolution called
    more than once keeps its first call. The model's train/eval mode is kept."""
    found: dict[str, ConvTaps] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and max(module.kernel_size) > 1:

            def record(mod, args, _name=name):
                if _name not in found:
                    found[_name] = conv_taps(mod, tuple(int(v) for v in args[0].shape[-2:]))

            hooks.append(module.register_forward_pre_hook(record))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, 3, *input_size, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return found
