"""Classifier heads of Large Kernel Matters (Peng et al. 2017), Fig. 4 and Fig. 2.

Fig. 4 compares four ways of mapping the top feature map (res-5, 2048 channels) to per-class
score maps:

* A: :class:`GlobalConvolution` — the GCN, a pair of separable k x 1 / 1 x k branches;
* B: :class:`PointwiseClassifier` — the 1x1 convolution baseline;
* C: :class:`LargeKernelConv` — one "trivial" k x k convolution;
* D: :class:`StackedConv3x3` — (k - 1) / 2 stacked 3x3 convolutions, no nonlinearity.

:class:`BoundaryRefinement` is the residual BR block of Fig. 2. As in the paper none of these
modules has normalisation or activation (except the ReLU inside BR) and every convolution has
a bias. Padding is ``(k - 1) // 2`` so the spatial size is kept; even ``k`` is rejected because
it cannot be centred.

Parameter-count convention: the paper's Tables 2 and 4 count convolution *weights* only (its
GCN k=5 figure, 434K, is 434,490 weights; with the 84 biases it would round to 435K). Use
:func:`weight_count` for the paper's convention and ``sum(p.numel() ...)`` for everything.
"""

from __future__ import annotations

import torch
from torch import nn

from seg_core.registry import HEADS


def _check_kernel(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"kernel size k must be an int, got {type(k).__name__}")
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel size k must be a positive odd integer, got {k}")
    return k


class GlobalConvolution(nn.Module):
    """GCN module (Peng et al. 2017, Sec. 3.1 and Fig. 2(b); head A of Fig. 4).

    Left branch: (k x 1) then (1 x k); right branch: (1 x k) then (k x 1); outputs summed.
    Every convolution, the middle ones too, outputs ``out_channels`` channels. There is no
    BN and no ReLU, so the module is linear with a dense k x k receptive field at the cost of
    ``2 k out (in + out)`` weights instead of ``k^2 in out``.
    """

    def __init__(self, in_channels: int, out_channels: int, k: int) -> None:
        super().__init__()
        k = _check_kernel(k)
        p = (k - 1) // 2
        self.k = k
        self.left = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (k, 1), padding=(p, 0)),
            nn.Conv2d(out_channels, out_channels, (1, k), padding=(0, p)),
        )
        self.right = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (1, k), padding=(0, p)),
            nn.Conv2d(out_channels, out_channels, (k, 1), padding=(p, 0)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.left(x) + self.right(x)


class PointwiseClassifier(nn.Conv2d):
    """The 1x1 convolution baseline (Fig. 4 B): a per-pixel linear classifier."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1)


class LargeKernelConv(nn.Conv2d):
    """The "trivial" dense k x k convolution (Fig. 4 C; Table 2): ``k^2 in out`` weights."""

    def __init__(self, in_channels: int, out_channels: int, k: int) -> None:
        k = _check_kernel(k)
        super().__init__(in_channels, out_channels, kernel_size=k, padding=(k - 1) // 2)


class StackedConv3x3(nn.Sequential):
    """(k - 1) / 2 stacked 3x3 convolutions without nonlinearity (Fig. 4 D; Tables 3-4).

    The stack has the receptive field of a k x k convolution. The intermediate convolutions
    have ``width`` channels (the paper's m: 2048, 1024 or 210 in Table 4; 2048 = the input
    width in Table 3); the last one outputs the classes. k = 3 is a single 3x3 convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, k: int, width: int) -> None:
        k = _check_kernel(k)
        if k < 3:
            raise ValueError(f"a 3x3 stack needs k >= 3, got {k}")
        if width < 1:
            raise ValueError(f"stack width must be positive, got {width}")
        depth = (k - 1) // 2
        channels = [in_channels] + [width] * (depth - 1) + [out_channels]
        super().__init__(
            *(nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip(channels, channels[1:]))
        )
        self.k = k


class BoundaryRefinement(nn.Module):
    """Boundary Refinement block (Peng et al. 2017, Sec. 3.2, Fig. 2(c)).

    ``x + conv3x3(relu(conv3x3(x)))`` on the score maps: a residual branch that refines the
    boundary of the coarse score map. Biases, no BN.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


def weight_count(module: nn.Module) -> int:
    """Number of convolution/linear weights, biases and norm parameters excluded."""
    return sum(
        m.weight.numel() for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    )


# --- registered builders: (in_channels, num_classes, options) -> head module -----------------


@HEADS.register("pointwise")
def pointwise(*, in_channels: int, num_classes: int) -> nn.Module:
    return PointwiseClassifier(in_channels, num_classes)


@HEADS.register("gcn")
def gcn(*, in_channels: int, num_classes: int, k: int) -> nn.Module:
    return GlobalConvolution(in_channels, num_classes, k)


@HEADS.register("trivial")
def trivial(*, in_channels: int, num_classes: int, k: int) -> nn.Module:
    return LargeKernelConv(in_channels, num_classes, k)


@HEADS.register("gcn_br")
def gcn_br(*, in_channels: int, num_classes: int, k: int) -> nn.Module:
    """GCN followed by one BR on its score map: the res-5 branch of Fig. 2, as in Table 5."""
    return nn.Sequential(GlobalConvolution(in_channels, num_classes, k), BoundaryRefinement(num_classes))


@HEADS.register("stack3x3")
def stack3x3(*, in_channels: int, num_classes: int, k: int, width: int | None = None) -> nn.Module:
    return StackedConv3x3(in_channels, num_classes, k, in_channels if width is None else width)
