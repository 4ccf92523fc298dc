"""PSPNet-50 and ICNet (Zhao et al., PSPNet CVPR 2017; ICNet ECCV 2018).

* :class:`PSPNet`: PSPNet's dilated ResNet-50 trunk (:func:`seg_core.backbones.dilated_resnet50`:
  deep stem, channel-width multiplier 1.0 / 0.5 (ICNet's half-channel baseline, Table 2) /
  0.25 (the "kernels kept" rates of Table 1), output stride 8/16/32 (Table 1, "feature
  downsampled")), the pyramid pooling module (bins 1/2/3/6) and a 3x3 + 1x1 head. Its stages
  (stem, res2..res5, PSP, head) are separate modules so that benchmarks can time each one
  (ICNet Fig. 1b).
* :class:`ICNet`: the official model, which differs from the paper's Fig. 2 drawing: the
  sub2 branch runs the half-width PSPNet-50 on the 1/2 image up to ``conv3_1`` (1/16), and
  the sub4 branch *continues from that feature*, downsampled x2 (1/32), through the rest of
  res3, res4, res5 and the PSP; so sub4 shares sub2's weights and early computation instead
  of taking its own 1/4 image. sub1 is a light branch of three strided 3x3 convolutions on
  the full image (1/8). Two :class:`CascadeFeatureFusion` units merge 1/32 -> 1/16 -> 1/8,
  a classifier at 1/4 gives the main output. Cascade label guidance (auxiliary classifiers
  on each fusion's low-resolution input) exists only in training mode; its targets are the
  labels downsampled by :func:`seg_core.losses.downsample_labels` (majority per cell).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import Conv2dNormActivation

from seg_core.backbones.pspnet import _width, dilated_resnet50
from seg_core.contract import Segmenter
from seg_core.registry import MODELS, ConfigError

PSP_BINS = (1, 2, 3, 6)


class PyramidPooling(nn.Module):
    """Pyramid pooling module (PSPNet Sec. 3.3, Fig. 3): average pooling to ``bins`` x ``bins``
    grids, upsampled bilinearly back.

    ``mode="concat"`` (PSPNet): each level is reduced by a 1x1 conv + BN + ReLU to 1/len(bins)
    of the channels and concatenated with the input (output: 2x the channels).
    ``mode="sum"`` (official ICNet): the pooled maps are upsampled and *summed* with the input
    (no convolution; output: the input's channels).
    """

    def __init__(self, channels: int, bins: Sequence[int] = PSP_BINS, mode: str = "concat") -> None:
        super().__init__()
        if mode not in ("concat", "sum"):
            raise ConfigError("psp_mode", f"expected 'concat' or 'sum', got {mode!r}")
        self.bins, self.mode = tuple(bins), mode
        self.reduce = nn.ModuleList()
        if mode == "concat":
            reduced = channels // len(self.bins)
            self.reduce = nn.ModuleList(
                nn.Sequential(
                    nn.Conv2d(channels, reduced, 1, bias=False), nn.BatchNorm2d(reduced), nn.ReLU(inplace=True)
                )
                for _ in self.bins
            )
        self.out_channels = channels + (channels // len(self.bins)) * len(self.bins) if mode == "concat" else channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        levels = []
        for i, b in enumerate(self.bins):
            y = F.adaptive_avg_pool2d(x, b)
            if self.mode == "concat":
                y = self.reduce[i](y)
            levels.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        if self.mode == "sum":
            return x + sum(levels)
        return torch.cat([x, *levels], dim=1)


class PSPHead(nn.Sequential):
    """3x3 conv + BN + ReLU, dropout 0.1, 1x1 classifier (PSPNet's final layers)."""

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int) -> None:
        super().__init__(
            Conv2dNormActivation(in_channels, mid_channels, 3),
            nn.Dropout2d(0.1),
            nn.Conv2d(mid_channels, num_classes, 1),
        )


class PSPNet(Segmenter):
    """PSPNet-50 (Zhao et al. 2017): dilated ResNet-50, pyramid pooling, head, x8 bilinear
    upsampling to the input size. ``stages()`` lists the modules in order, for per-stage timing."""

    def __init__(self, num_classes: int, *, width: float = 1.0, output_stride: int = 8) -> None:
        super().__init__()
        self.backbone = dilated_resnet50(width=width, output_stride=output_stride)
        top = self.backbone.out_channels[self.backbone.top]
        self.psp = PyramidPooling(top, mode="concat")
        self.classifier = PSPHead(self.psp.out_channels, _width(512, width), num_classes)
        self.decoder_inputs = (self.backbone.top,)

    def stages(self) -> list[tuple[str, nn.Module]]:
        names = {"layer1": "res2", "layer2": "res3", "layer3": "res4", "layer4": "res5"}
        return (
            [("stem", self.backbone.stem)]
            + [(names[n], self.backbone.stages[n]) for n in self.backbone.stage_names]
            + [("psp", self.psp), ("head", self.classifier)]
        )

    def decode(self, features, size, **extra) -> dict[str, torch.Tensor]:
        logits = self.classifier(self.psp(features[self.backbone.top]))
        return {"out": F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)}


class CascadeFeatureFusion(nn.Module):
    """CFF unit (ICNet Sec. 3.3, Fig. 3).

    Low-resolution ``F1``: x2 bilinear upsampling, 3x3 convolution with dilation 2, BN (no ReLU).
    High-resolution ``F2``: 1x1 convolution, BN. Sum, ReLU. The auxiliary classifier for cascade
    label guidance reads the *upsampled* ``F1`` (1x1 conv to the classes).

    ``fusion`` replaces the dilated 3x3 for ICNet Table 3: ``"dc3"``, ``"dc5"``, ``"dc7"`` are
    3x3 / 5x5 / 7x7 convolutions with dilation 1 on the upsampled ``F1``.
    """

    KERNELS = {"cff": (3, 2), "dc3": (3, 1), "dc5": (5, 1), "dc7": (7, 1)}

    def __init__(
        self, low_channels: int, high_channels: int, out_channels: int, num_classes: int, fusion: str = "cff"
    ) -> None:
        super().__init__()
        if fusion not in self.KERNELS:
            raise ConfigError("fusion", f"expected one of {sorted(self.KERNELS)}, got {fusion!r}")
        k, d = self.KERNELS[fusion]
        self.low = nn.Sequential(
            nn.Conv2d(low_channels, out_channels, k, padding=d * (k - 1) // 2, dilation=d, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.high = nn.Sequential(nn.Conv2d(high_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.aux_classifier = nn.Conv2d(low_channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        up = F.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=False)
        fused = F.relu(self.low(up) + self.high(high))
        return fused, self.aux_classifier(up) if self.training else None


class ICNet(Segmenter):
    """ICNet, official structure (see the module docstring): sub1 (full image, light), sub2
    (1/2 image, PSPNet-50 to conv3_1), sub4 (sub2's conv3_1 downsampled x2, rest of the
    network + PSP); ``branches`` = ``"sub4"``, ``"sub24"`` or ``"sub124"`` (Table 2).

    ``width`` is the trunk's channel multiplier; 0.5 is the official model (half-channel
    PSPNet-50, sub1 32/32/64, 256 channels after the PSP, 128 in the CFFs); the light parts
    scale with it too (``width / 0.5``), so a narrow mini model keeps the proportions.

    Outputs: ``"out"`` at the input size always; in training mode also the cascade outputs
    ``"sub4"`` (1/16), ``"sub24"`` (1/8) and ``"sub124"`` (1/4) of the branches present, for
    cascade label guidance (Sec. 3.4; weights 0.4 / 0.4 / 1.0 in the loss config).

    ``extract(image)`` runs the (pretrainable, freezable) trunk and returns what ``decode``
    needs: the image itself (for sub1), ``conv3_1`` (sub2, 1/16) and ``res5`` (sub4, 1/32);
    ``decode`` is everything trained on top. ``model(image) == decode(extract(image))``.
    """

    aliases = ("conv3_1", "res3_rest")  # sub4 continues through sub2's res3 blocks (the official model)

    def __init__(self, num_classes: int, *, branches: str = "sub124", fusion: str = "cff", width: float = 0.5) -> None:
        super().__init__()
        if branches not in ("sub4", "sub24", "sub124"):
            raise ConfigError("branches", f"expected 'sub4', 'sub24' or 'sub124', got {branches!r}")
        self.branches = branches
        self.backbone = dilated_resnet50(width=width, output_stride=8)
        res3 = self.backbone.stages["layer2"]
        self.conv3_1 = res3[0]  # shared: sub2 ends here, sub4 continues from here
        self.res3_rest = nn.Sequential(*list(res3)[1:])
        c3 = self.backbone.out_channels["layer2"]
        top = self.backbone.out_channels["layer4"]
        scale = width / 0.5
        c_psp, c_cff = _width(256, scale), _width(128, scale)
        self.psp = PyramidPooling(top, mode="sum")
        self.reduce = nn.Sequential(nn.Conv2d(top, c_psp, 1, bias=False), nn.BatchNorm2d(c_psp), nn.ReLU(inplace=True))
        self.sub1 = None
        self.cff_24 = self.cff_124 = None
        if branches == "sub4":
            self.classifier = nn.Conv2d(c_psp, num_classes, 1)
        else:
            self.cff_24 = CascadeFeatureFusion(c_psp, c3, c_cff, num_classes, fusion)
            if branches == "sub124":
                c1, c2 = _width(32, scale), _width(64, scale)
                self.sub1 = nn.Sequential(
                    Conv2dNormActivation(3, c1, 3, stride=2),
                    Conv2dNormActivation(c1, c1, 3, stride=2),
                    Conv2dNormActivation(c1, c2, 3, stride=2),
                )
                self.cff_124 = CascadeFeatureFusion(c_cff, c2, c_cff, num_classes, fusion)
            self.classifier = nn.Conv2d(c_cff, num_classes, 1)
        self.decoder_inputs = ("image", "conv3_1", "res5")

    def extract(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The trunk: sub2 to conv3_1 on the 1/2 image, then sub4 on conv3_1 downsampled x2."""
        half = F.interpolate(image, scale_factor=0.5, mode="bilinear", align_corners=False)
        conv3_1 = self.conv3_1(self.backbone.stages["layer1"](self.backbone.stem(half)))
        x = F.interpolate(conv3_1, scale_factor=0.5, mode="bilinear", align_corners=False)
        x = self.backbone.stages["layer4"](self.backbone.stages["layer3"](self.res3_rest(x)))
        return {"image": image, "conv3_1": conv3_1, "res5": x}

    def decode(self, features, size, **extra) -> dict[str, torch.Tensor]:
        x = self.reduce(self.psp(features["res5"]))
        aux: dict[str, torch.Tensor] = {}
        if self.cff_24 is not None:
            x, aux["sub4"] = self.cff_24(x, features["conv3_1"])
        if self.cff_124 is not None:
            x, aux["sub24"] = self.cff_124(x, self.sub1(features["image"]))
        if self.branches != "sub4":  # x2: to 1/4 (sub124) or 1/8 (sub24), the main cascade output
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        logits = self.classifier(x)
        outputs = {"out": F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)}
        if self.training:
            outputs[self.branches] = logits
            outputs.update({k: v for k, v in aux.items() if v is not None})
        return outputs

    def parts(self) -> dict[str, tuple[str, ...]]:
        trunk = ("backbone", "conv3_1", "res3_rest")  # conv3_1 and res3_rest alias the backbone's res3
        return {"trunk": trunk, "decoder": tuple(n for n, _ in self.named_children() if n not in trunk)}


def _trunk_options(backbone: str, backbone_options: dict | None, default_width: float) -> dict:
    if backbone != "dilated_resnet50":
        raise ConfigError("backbone", f"PSPNet and ICNet are built on 'dilated_resnet50', got {backbone!r}")
    options = {"width": default_width, **(backbone_options or {})}
    unknown = set(options) - {"width", "output_stride", "pretrained"}
    if unknown:
        raise ConfigError(f"backbone_options.{sorted(unknown)[0]}", "unknown option; expected width, output_stride")
    if options.get("pretrained") is not None:
        raise ConfigError(
            "backbone_options.pretrained",
            "dilated_resnet50 has no published weights here; the mini scale pretrains its own",
        )
    return options


@MODELS.register("pspnet50", example={"backbone_options": {"width": 0.0625}})
def pspnet50(
    *, num_classes: int, backbone: str = "dilated_resnet50", backbone_options: dict[str, Any] | None = None
) -> PSPNet:
    """PSPNet-50; ``backbone_options``: ``width`` (1.0; 0.5 is ICNet's half-channel baseline,
    Table 2) and ``output_stride`` (8, 16 or 32)."""
    options = _trunk_options(backbone, backbone_options, 1.0)
    try:
        return PSPNet(num_classes, width=options["width"], output_stride=options.get("output_stride", 8))
    except ConfigError as e:
        raise e.within("backbone_options") if e.key in ("width", "output_stride") else e from None


@MODELS.register("icnet", example={"branches": "sub124", "backbone_options": {"width": 0.0625}})
def icnet(
    *,
    num_classes: int,
    branches: str = "sub124",
    fusion: str = "cff",
    backbone: str = "dilated_resnet50",
    backbone_options: dict[str, Any] | None = None,
) -> ICNet:
    """ICNet (official structure): ``branches`` sub4 / sub24 / sub124, ``fusion`` cff / dc3 /
    dc5 / dc7, ``backbone_options.width`` the trunk width (0.5 = the official model)."""
    options = _trunk_options(backbone, backbone_options, 0.5)
    if options.get("output_stride", 8) != 8:
        raise ConfigError("backbone_options.output_stride", "ICNet's trunk runs at output stride 8 (res4/res5 dilated)")
    try:
        return ICNet(num_classes, branches=branches, fusion=fusion, width=options["width"])
    except ConfigError as e:
        raise e.within("backbone_options") if e.key == "width" else e from None
