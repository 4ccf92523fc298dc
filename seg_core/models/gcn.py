"""Large Kernel Matters (Peng et al. 2017): the Fig. 4 heads, Boundary Refinement, the single-head
ablation network (Sec. 4.1) and the full Fig. 2 network.

Fig. 4 compares four ways of mapping the top feature map (res-5, 2048 channels) to per-class
score maps:

* A: :class:`GlobalConvolution` — the GCN, a pair of separable k x 1 / 1 x k branches;
* B: :class:`PointwiseClassifier` — the 1x1 convolution baseline;
* C: :class:`LargeKernelConv` — one "trivial" k x k convolution;
* D: :class:`StackedConv3x3` — (k - 1) / 2 stacked 3x3 convolutions, no nonlinearity.

:class:`BoundaryRefinement` is the residual BR block of Fig. 2. As in the paper none of these
modules has normalisation or activation (except the ReLU inside BR) and every convolution has
a bias. Padding is ``(k - 1) // 2`` so the spatial size is kept; even ``k`` is rejected because
it cannot be centred. Weights are counted with :func:`seg_core.layers.weight_count` (the
paper's convention: convolution weights only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seg_core.backbones.base import StagedBackbone
from seg_core.contract import Segmenter
from seg_core.layers import build_backbone
from seg_core.registry import HEADS, MODELS, ConfigError


def _check_kernel(k: int, key: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise ConfigError(key, f"expected an integer kernel size, got {k!r}")
    if k < 1 or k % 2 == 0:
        raise ConfigError(key, f"expected a positive odd kernel size (padding (k-1)//2 must centre it), got {k}")
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
            raise ConfigError("k", f"a 3x3 stack needs k >= 3, got {k}")
        if width < 1:
            raise ConfigError("stack_width", f"expected a positive width, got {width}")
        depth = (k - 1) // 2
        channels = [in_channels] + [width] * (depth - 1) + [out_channels]
        super().__init__(*(nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in zip(channels, channels[1:])))
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


# --- registered heads: (in_channels, num_classes, options) -> head module ---------------------
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
def gcn_br_head(*, in_channels: int, num_classes: int, k: int) -> nn.Module:
    """GCN followed by one BR on its score map: the res-5 branch of Fig. 2, as in Table 5."""
    return nn.Sequential(GlobalConvolution(in_channels, num_classes, k), BoundaryRefinement(num_classes))


@HEADS.register("stack3x3")
def stack3x3(*, in_channels: int, num_classes: int, k: int, width: int | None = None) -> nn.Module:
    return StackedConv3x3(in_channels, num_classes, k, in_channels if width is None else width)


def build_head(
    head: str, *, in_channels: int, num_classes: int, k: int | None = None, stack_width: int | None = None
) -> nn.Module:
    """One Fig. 4 head by name, checking which options it takes."""
    if head not in HEADS:
        raise ConfigError("head", f"unknown head {head!r}; expected one of {HEADS.names()}")
    head_kwargs: dict[str, Any] = {"in_channels": in_channels, "num_classes": num_classes}
    if head == "pointwise":
        if k is not None:
            raise ConfigError("k", "the pointwise (1x1) head takes no k")
    else:
        if k is None:
            raise ConfigError("k", f"missing: head {head!r} needs a kernel size k")
        head_kwargs["k"] = k
    if stack_width is not None:
        if head != "stack3x3":
            raise ConfigError("stack_width", f"applies to head 'stack3x3' only, not {head!r}")
        head_kwargs["width"] = stack_width
    return HEADS.build(head, **head_kwargs)


# ------------------------------------------------------------- the Fig. 4 ablation network
class SingleHeadSegmenter(Segmenter):
    """One classifier head on the backbone's top feature map, bilinearly upsampled to the input.

    The Fig. 4 ablation network of Large Kernel Matters: heads A-D sit on res-5 only (Sec. 4.1)
    and their score map is upsampled to the image size (bilinear, ``align_corners=False``).
    """

    def __init__(self, backbone: StagedBackbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.decoder_inputs = (backbone.top,)

    def decode(self, features: Mapping[str, torch.Tensor], size: Sequence[int], **extra) -> dict[str, torch.Tensor]:
        logits = self.head(features[self.backbone.top])
        return {"out": F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)}

    def parts(self) -> dict[str, tuple[str, ...]]:
        return {"backbone": ("backbone",), "head": ("head",)}


_TINY_BACKBONE = {"stem_width": 8, "widths": [8, 8, 16]}


@MODELS.register(
    "single_head", example={"backbone": "mini_resnet", "head": "gcn", "k": 3, "backbone_options": _TINY_BACKBONE}
)
def single_head(
    *,
    num_classes: int,
    backbone: str,
    head: str,
    k: int | None = None,
    stack_width: int | None = None,
    backbone_options: dict[str, Any] | None = None,
) -> SingleHeadSegmenter:
    """Backbone + one Fig. 4 head (``pointwise``, ``gcn``, ``trivial``, ``stack3x3``, ``gcn_br``).

    ``k`` is the head's kernel size (the 1x1 ``pointwise`` head takes none); ``stack_width`` is
    Table 4's intermediate width m for ``stack3x3`` (default: the backbone's top width, as in
    Table 3). ``backbone_options`` go to the backbone builder.
    """
    net = build_backbone(backbone, backbone_options)
    return SingleHeadSegmenter(
        net,
        build_head(head, in_channels=net.out_channels[net.top], num_classes=num_classes, k=k, stack_width=stack_width),
    )


# ------------------------------------------------------------------ the full Fig. 2 network
class ScoreUpsample(nn.Module):
    """x2 upsampling of score maps between pyramid levels (Fig. 2).

    ``"deconv"``: a learnable 4x4 stride-2 transposed convolution (classes -> classes), as in
    the paper, initialised to per-class bilinear interpolation (the FCN convention: bilinear
    kernel on the diagonal, zeros elsewhere) and without bias;
    ``"bilinear"``: fixed bilinear interpolation (``align_corners=False``), as in most public
    re-implementations. Either way the result is cropped/resized to the requested size, which
    handles odd feature-map sizes.
    """

    def __init__(self, channels: int, mode: str) -> None:
        super().__init__()
        if mode not in ("deconv", "bilinear"):
            raise ConfigError("upsample", f"expected 'deconv' or 'bilinear', got {mode!r}")
        self.mode = mode
        self.deconv = None
        if mode == "deconv":
            self.deconv = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False)
            with torch.no_grad():
                f = torch.tensor([0.25, 0.75, 0.75, 0.25])
                self.deconv.weight.zero_()
                for c in range(channels):
                    self.deconv.weight[c, c] = f[:, None] * f[None, :]

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        size = tuple(size)
        if self.deconv is None:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        y = self.deconv(x)
        if tuple(y.shape[-2:]) != size:
            y = y[..., : size[0], : size[1]]
            if tuple(y.shape[-2:]) != size:  # target larger than 2x (not a x2 step): resize
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return y


def _stage_head(kind: str, in_channels: int, num_classes: int, k: int) -> nn.Module:
    if kind == "gcn":
        return GlobalConvolution(in_channels, num_classes, k)
    if kind == "pointwise":
        return PointwiseClassifier(in_channels, num_classes)
    raise ConfigError("stage_head", f"expected 'gcn' or 'pointwise', got {kind!r}")


class GCNSegmenter(Segmenter):
    """The full network of Large Kernel Matters (Peng et al. 2017, Fig. 2).

    Every backbone stage (res2..res5 on a ResNet) gets a GCN (or, for the baseline, a 1x1
    classifier) and a BR. From the deepest stage down, the running score map is upsampled x2,
    added to the next stage's score map and refined by another BR. Below the shallowest stage
    (stride 4 on a ResNet) the map is upsampled x2 and refined by a BR until full resolution:
    on a ResNet that is 4 + 3 + 2 = 9 BRs, as in the paper. ``refine=False`` drops every BR
    (the "GCN" row of Table 7); ``stage_head="pointwise"`` with ``refine=False`` is its baseline.

    Where the backbone keeps resolution between stages (dilated stages), the x2 step becomes
    a plain addition; a final bilinear resize guarantees the input size.
    """

    def __init__(
        self, backbone: StagedBackbone, num_classes: int, *, k: int, stage_head: str, refine: bool, upsample: str
    ) -> None:
        super().__init__()
        self.backbone = backbone
        names = backbone.stage_names
        self.decoder_inputs = tuple(names)

        def br() -> nn.Module:  # a fresh module per call: no two BRs share weights
            return BoundaryRefinement(num_classes) if refine else nn.Identity()

        self.heads = nn.ModuleDict(
            {s: _stage_head(stage_head, backbone.out_channels[s], num_classes, k) for s in names}
        )
        self.stage_refine = nn.ModuleDict({s: br() for s in names})
        # fusion into stage s (all but the deepest): upsample the deeper map, add, refine
        self.fuse_upsample = nn.ModuleDict({s: ScoreUpsample(num_classes, upsample) for s in names[:-1]})
        self.fuse_refine = nn.ModuleDict({s: br() for s in names[:-1]})
        shallowest = backbone.strides[names[0]]
        steps = max(0, int(round(math.log2(shallowest))))
        if 2**steps != shallowest:
            raise ConfigError("backbone", f"the shallowest stage's stride must be a power of 2, got {shallowest}")
        self.final_upsample = nn.ModuleList([ScoreUpsample(num_classes, upsample) for _ in range(steps)])
        self.final_refine = nn.ModuleList([br() for _ in range(steps)])

    def decode(self, features: Mapping[str, torch.Tensor], size: Sequence[int], **extra) -> dict[str, torch.Tensor]:
        names = self.backbone.stage_names
        score = None
        for s in reversed(names):
            local = self.stage_refine[s](self.heads[s](features[s]))
            if score is None:
                score = local
                continue
            if score.shape[-2:] != local.shape[-2:]:
                score = self.fuse_upsample[s](score, local.shape[-2:])
            score = self.fuse_refine[s](score + local)
        for i, (up, refine) in enumerate(zip(self.final_upsample, self.final_refine)):
            remaining = len(self.final_upsample) - i - 1
            target = (-(-size[0] // 2**remaining), -(-size[1] // 2**remaining)) if remaining else tuple(size)
            score = refine(up(score, target))
        if tuple(score.shape[-2:]) != tuple(size):
            score = F.interpolate(score, size=tuple(size), mode="bilinear", align_corners=False)
        return {"out": score}

    def boundary_refinements(self) -> list[BoundaryRefinement]:
        return [m for m in self.modules() if isinstance(m, BoundaryRefinement)]


@MODELS.register("gcn_br", example={"backbone": "mini_resnet", "k": 3, "backbone_options": _TINY_BACKBONE})
def gcn_br(
    *,
    num_classes: int,
    backbone: str,
    k: int = 15,
    stage_head: str = "gcn",
    refine: bool = True,
    upsample: str = "deconv",
    backbone_options: dict[str, Any] | None = None,
) -> GCNSegmenter:
    """Fig. 2 network: GCN(k) + BR on every backbone stage, top-down fusion with BRs.

    ``stage_head``: ``"gcn"`` or ``"pointwise"`` (1x1 baseline); ``refine``: use the BRs;
    ``upsample``: ``"deconv"`` (paper) or ``"bilinear"`` (common code).
    """
    if stage_head == "gcn":
        _check_kernel(k)
    net = build_backbone(backbone, backbone_options)
    return GCNSegmenter(net, num_classes, k=k, stage_head=stage_head, refine=refine, upsample=upsample)
