"""DeepLab v3 (Chen et al. 2017, "Rethinking Atrous Convolution", arXiv 1706.05587) and v3+
(Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution", arXiv 1802.02611).

The trunk is :func:`~seg_core.backbones.cascaded.cascaded_resnet` (block1-4, pretrained), followed
by ``extra_blocks`` new copies of block4 (v3's block5-7, "going deeper"). ``output_stride`` and
``multi_grid`` are model options, set on the trunk and the copies together
(:func:`~seg_core.backbones.cascaded.set_output_stride`), so every variant of a table loads one
pretrained trunk. On the last block's map:

* :class:`AtrousSpatialPyramidPooling` (v3 Sec. 3.3, Fig. 5): a 1x1 branch, 3x3 branches at
  ``rates`` (6/12/18 at output stride 16; the rates double at 8), and image pooling (global
  average -> 1x1 -> BN -> ReLU -> bilinear upsampling); every branch ``width`` channels (256),
  BN + ReLU, no bias before BN; concatenated -> 1x1 ``width`` -> BN -> ReLU -> dropout (the
  papers give no rate; DeepLab's TF code keeps 0.9 of the units, a rate of 0.1, the default
  here). Which branches exist is configurable (v3 Table 5: rates, image pooling). Without ASPP
  (``aspp = False``, v3 Tables 1 and 3: "going deeper") the classifier reads the top map.
* ``refine_convs``: 3x3 ``width`` convolutions (BN, ReLU) after ASPP. torchvision's
  ``DeepLabHead`` has one; the papers have none. With ``refine_convs = 1`` and rates 12/24/36 at
  output stride 8 the model has exactly torchvision ``deeplabv3_resnet50``'s parameters
  (tests/test_deeplab_v3.py pins it).
* :class:`Decoder` (v3+ Sec. 3.1, Fig. 2; Tables 1-2): the stride-4 feature (block1) -> 1x1 to
  ``low_level_channels`` (48) -> BN -> ReLU, concatenated with the ASPP output upsampled to stride
  4, then ``decoder_convs`` convolutions of ``decoder_kernel`` x ``decoder_kernel`` and
  ``decoder_width`` channels (two 3x3 of 256 in the paper), BN + ReLU each.
* A 1x1 classifier, then bilinear upsampling to the input (``align_corners=False``).

**Rates at another scale.** The paper's rates belong to its map (513 px crops: 33 cells at output
stride 16). ``feature_map`` (the top map's side at the *training* output stride) scales them by
DeepLab v2's rule (:func:`~seg_core.models.deeplab.scaled_rate`, here with a 33-cell paper map).
**Train and evaluation output stride** (v3 Table 10, v3+ Table 3): :meth:`DeepLabV3.reconfigure`
sets another output stride on the trained weights; the trunk's dilations follow
(:func:`~seg_core.backbones.cascaded.set_output_stride`) and the ASPP rates become those of a model
built at the evaluation stride, as the papers double them at 8 for a model trained at 16: the
paper's rates, the map side and the paper's map side are all rescaled *before* rounding
(:func:`rates_at_output_stride`), so a model trained at 16 (rates 6/12/18 on 8 of the paper's 33
cells: 1/3/4) and evaluated at 8 runs at 3/6/9, the rates of one built at 8 (12/24/36 on 16 of
65 cells), not at the doubled rounded 2/6/8. ``describe()`` records both (``aspp_rates``, the
training rates; ``eval_aspp_rates``, the evaluated ones).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import Conv2dNormActivation

from seg_core.backbones.base import StagedBackbone
from seg_core.backbones.cascaded import block4_copies, set_output_stride
from seg_core.contract import Segmenter
from seg_core.layers import build_backbone
from seg_core.models.deeplab import scaled_dropout, scaled_rate
from seg_core.registry import MODELS, ConfigError

PAPER_FEATURE_MAP = 33  # 513 px crops at output stride 16 (v3 Sec. 4, v3+ Sec. 4)
PAPER_WIDTH = 256  # channels of every ASPP branch and of its projection (v3 Sec. 3.3)


def valid_tap_fraction(rate: int, side: int) -> float:
    """Share of a 3x3 filter's taps at ``rate`` that land on a ``side`` x ``side`` map (zero
    padding outside), averaged over the map's cells (v3 Sec. 3.3, Fig. 4: as the rate nears the
    map's side, the filter degenerates to its centre tap)."""
    one_d = sum(1 + (i - rate >= 0) + (i + rate < side) for i in range(side)) / (3 * side)
    return one_d**2


def _atrous(in_channels: int, out_channels: int, rate: int) -> Conv2dNormActivation:
    return Conv2dNormActivation(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False)


class ImagePooling(nn.Sequential):
    """Image-level features (v3 Sec. 3.3): global average pooling -> 1x1 -> BN -> ReLU, upsampled
    to the map. BatchNorm on a 1x1 map needs more than one value per channel in training, so
    train with batches > 1 (evaluation works at batch 1)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), Conv2dNormActivation(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


def rates_at_output_stride(
    paper_rates: Sequence[int], feature_map: int | None, paper_feature_map: int, factor: float
) -> list[int]:
    """The ASPP rates of a model built at ``factor`` times the resolution it was trained at
    (``factor`` = training / evaluation output stride): the paper's rates and the map side scale
    by ``factor``, the paper's map side as a map of that stride does (``(side - 1) * factor + 1``:
    513 px crops give 33 cells at 16, 65 at 8, 17 at 32), and only then is the rate rounded
    (:func:`~seg_core.models.deeplab.scaled_rate`)."""
    if feature_map is None:  # the paper's own map
        return [max(1, round(r * factor)) for r in paper_rates]
    paper_side = (paper_feature_map - 1) * factor + 1
    return [scaled_rate(r * factor, feature_map * factor, paper_side) for r in paper_rates]


class AtrousSpatialPyramidPooling(nn.Module):
    """DeepLab v3's ASPP: [1x1] + 3x3 at each rate + [image pooling], concatenated, projected."""

    def __init__(
        self,
        in_channels: int,
        rates: Sequence[int],
        width: int,
        *,
        pointwise: bool = True,
        image_pooling: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = []
        if pointwise:
            branches.append(Conv2dNormActivation(in_channels, width, 1, bias=False))
        branches += [_atrous(in_channels, width, r) for r in rates]
        if image_pooling:
            branches.append(ImagePooling(in_channels, width))
        if not branches:
            raise ConfigError("aspp_rates", "an ASPP needs at least one branch (rates, the 1x1 or image pooling)")
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(
            Conv2dNormActivation(len(branches) * width, width, 1, bias=False), nn.Dropout(dropout)
        )

    def atrous_convs(self) -> list[nn.Conv2d]:
        return [b[0] for b in self.branches if isinstance(b, Conv2dNormActivation) and b[0].kernel_size == (3, 3)]

    def set_rates(self, rates: Sequence[int]) -> None:
        """Run the atrous branches at ``rates`` (one per branch) on the same weights."""
        convs = self.atrous_convs()
        if len(rates) != len(convs):
            raise ValueError(f"{len(convs)} atrous branches, {len(rates)} rates")
        for conv, rate in zip(convs, rates):
            conv.dilation = conv.padding = (rate, rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class Decoder(nn.Module):
    """v3+'s decoder: low-level features reduced, concatenated with the upsampled encoder output,
    then a stack of convolutions."""

    def __init__(self, in_channels: int, low_in: int, low_channels: int, convs: int, width: int, kernel: int) -> None:
        super().__init__()
        self.reduce = Conv2dNormActivation(low_in, low_channels, 1, bias=False)
        layers, c = [], in_channels + low_channels
        for _ in range(convs):
            layers.append(Conv2dNormActivation(c, width, kernel, bias=False))
            c = width
        self.fuse = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, self.reduce(low)], dim=1))


class DeepLabV3(Segmenter):
    """Cascaded ResNet -> [ASPP] -> [refinement convs] -> [v3+ decoder] -> classifier -> upsampling."""

    def __init__(
        self,
        backbone: StagedBackbone,
        cascade: nn.ModuleList,
        aspp: AtrousSpatialPyramidPooling | None,
        refine: nn.Module,
        decoder: Decoder | None,
        classifier: nn.Conv2d,
        info: dict[str, Any],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.cascade = cascade
        self.aspp = aspp
        self.refine = refine
        self.decoder = decoder
        self.classifier = classifier
        self.low_level = backbone.stage_names[0]
        self.decoder_inputs = (backbone.top,) + ((self.low_level,) if decoder is not None else ())
        self.train_output_stride = info["output_stride"]
        self.info = info

    def decode(self, features: Mapping[str, torch.Tensor], size: Sequence[int], **extra) -> dict[str, torch.Tensor]:
        x = features[self.backbone.top]
        for block in self.cascade:  # block5-7
            x = block(x)
        if self.aspp is not None:
            x = self.aspp(x)
        x = self.refine(x)
        if self.decoder is not None:
            x = self.decoder(x, features[self.low_level])
        logits = self.classifier(x)
        return {"out": F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)}

    def parts(self) -> dict[str, tuple[str, ...]]:
        head = tuple(n for n in ("aspp", "refine", "classifier") if getattr(self, n) is not None)
        parts = {"backbone": ("backbone",), "head": head}
        if len(self.cascade):
            parts["cascade"] = ("cascade",)
        if self.decoder is not None:
            parts["decoder"] = ("decoder",)
        return parts

    def reconfigure(self, *, output_stride: int | None = None, **options) -> None:
        """Evaluate at another ``output_stride`` on the trained weights (v3 Table 10, v3+ Table 3)."""
        for key in options:
            raise ConfigError(key, f"DeepLabV3 can be reconfigured for output_stride only, not {key!r}")
        if output_stride is None:
            return
        set_output_stride(self.backbone, output_stride, self.backbone.multi_grid, self.cascade)
        if self.aspp is not None:
            info = self.info
            rates = rates_at_output_stride(
                info["paper_aspp_rates"], info["feature_map"], info["paper_feature_map"],
                self.train_output_stride / output_stride,
            )  # fmt: skip
            self.aspp.set_rates(rates)
            self.info["eval_aspp_rates"] = rates
        self.info["eval_output_stride"] = output_stride

    def describe(self) -> dict[str, Any]:
        """The model as built, with the share of each ASPP filter's taps that land on the map
        (``aspp_valid_taps``; ``paper_aspp_valid_taps`` on the paper's map)."""
        info = dict(self.info)
        side, paper_side = info["feature_map"] or info["paper_feature_map"], info["paper_feature_map"]
        info["aspp_valid_taps"] = [round(valid_tap_fraction(r, side), 3) for r in info["aspp_rates"]]
        info["paper_aspp_valid_taps"] = [round(valid_tap_fraction(r, paper_side), 3) for r in info["paper_aspp_rates"]]
        return info


TINY_EXAMPLE = {  # the registry's tiny options (generated tests); Gated-SCNN's build on them
    "backbone_options": {"width": 0.0625, "units": [1, 1, 1, 3], "output_stride": 8},
    "aspp_rates": [1, 2],
    "width": 8,
    "decoder": True,
    "low_level_channels": 4,
    "decoder_width": 8,
}


@MODELS.register("deeplab_v3", example=TINY_EXAMPLE)
def deeplab_v3(
    *,
    num_classes: int,
    backbone: str = "cascaded_resnet",
    backbone_options: dict[str, Any] | None = None,
    extra_blocks: int = 0,
    output_stride: int | None = None,
    multi_grid: Sequence[int] | None = None,
    aspp: bool = True,
    aspp_rates: Sequence[int] = (6, 12, 18),
    aspp_pointwise: bool = True,
    image_pooling: bool = True,
    width: int = 256,
    dropout: float = 0.1,
    feature_map: int | None = None,
    paper_feature_map: int = PAPER_FEATURE_MAP,
    refine_convs: int = 0,
    decoder: bool = False,
    low_level_channels: int = 48,
    decoder_convs: int = 2,
    decoder_width: int = 256,
    decoder_kernel: int = 3,
) -> DeepLabV3:
    """DeepLab v3 (``decoder = False``) or v3+ (``decoder = True``); see the module docstring.
    ``output_stride`` (default: the trunk's) is the last block's, 4 ... 256 with block5-7;
    ``multi_grid`` the unit rates of block4 and after. ``aspp_rates`` are the paper's at the
    training output stride; ``feature_map`` (the top map's side in cells at that stride) scales
    them to a smaller map. ``dropout`` is the rate after the ASPP projection at the paper's 256
    channels (0.1: DeepLab's TF code; the papers give none); a narrower ``width`` keeps its noise
    per unit (:func:`~seg_core.models.deeplab.scaled_dropout`: 0.1 at 256 channels is 1/73 at 32)."""
    if backbone != "cascaded_resnet":
        raise ConfigError(
            "backbone", f"DeepLab v3 runs on 'cascaded_resnet' (output stride, multi-grid), got {backbone!r}"
        )
    if any(r < 1 for r in aspp_rates):
        raise ConfigError("aspp_rates", f"expected rates >= 1, got {list(aspp_rates)}")
    for key, value, low in (("width", width, 1), ("refine_convs", refine_convs, 0), ("decoder_convs", decoder_convs, 0),
                            ("low_level_channels", low_level_channels, 1), ("decoder_width", decoder_width, 1)):  # fmt: skip
        if value < low:
            raise ConfigError(key, f"expected an integer >= {low}, got {value}")
    if decoder_kernel not in (1, 3):
        raise ConfigError("decoder_kernel", f"expected 1 or 3 (v3+ Table 2), got {decoder_kernel}")
    if feature_map is not None and feature_map < 1:
        raise ConfigError("feature_map", f"expected the top map's side in cells (>= 1), got {feature_map}")
    if not 0 <= dropout < 1:
        raise ConfigError("dropout", f"expected a probability in [0, 1), got {dropout}")
    net = build_backbone(backbone, backbone_options)
    cascade = block4_copies(net, extra_blocks)
    final_stride = output_stride or net.output_stride  # default: the trunk's (block5-7 then dilated)
    set_output_stride(net, final_stride, multi_grid or net.multi_grid, cascade)
    channels = net.out_channels[net.top]
    rates = [scaled_rate(r, feature_map, paper_feature_map) for r in aspp_rates]
    used_dropout = scaled_dropout(dropout, width / PAPER_WIDTH)
    pyramid = None
    if aspp:
        pyramid = AtrousSpatialPyramidPooling(
            channels, rates, width, pointwise=aspp_pointwise, image_pooling=image_pooling, dropout=used_dropout
        )
        channels = width
    refine = nn.Sequential(
        *[Conv2dNormActivation(channels if i == 0 else width, width, 3, bias=False) for i in range(refine_convs)]
    )
    if refine_convs:
        channels = width
    fuse = None
    if decoder:
        low = net.out_channels[net.stage_names[0]]
        fuse = Decoder(channels, low, low_level_channels, decoder_convs, decoder_width, decoder_kernel)
        channels = fuse.out_channels
    info = {
        "output_stride": final_stride,
        "extra_blocks": extra_blocks,
        "multi_grid": list(net.multi_grid),
        "paper_aspp_rates": list(aspp_rates) if aspp else [],
        "aspp_rates": rates if aspp else [],
        "image_pooling": bool(aspp and image_pooling),
        "dropout_at_256": dropout,  # the papers give none: DeepLab's TF code (keep_prob 0.9)
        "dropout": round(used_dropout, 6),
        "feature_map": feature_map,
        "paper_feature_map": paper_feature_map,
        "decoder": decoder,
    }
    return DeepLabV3(net, cascade, pyramid, refine, fuse, nn.Conv2d(channels, num_classes, 1), info)


class TorchvisionDeepLabV3(Segmenter):
    """torchvision's ``deeplabv3_resnet50/101`` (its trunk at output stride 8, its ``DeepLabHead``),
    wrapped in the model contract: the peer implementation our v3 is checked against (parameter
    counts in the tests, latency in the benchmarks). Its modules are torchvision's, untouched."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        body = net.backbone  # IntermediateLayerGetter: conv1, bn1, relu, maxpool, layer1-4
        stem = nn.Sequential(body.conv1, body.bn1, body.relu, body.maxpool)
        stages = {f"layer{i}": getattr(body, f"layer{i}") for i in range(1, 5)}
        self.backbone = StagedBackbone(stem, OrderedDict(stages), [256, 512, 1024, 2048], [4, 8, 8, 8])
        self.head = net.classifier
        self.decoder_inputs = ("layer4",)

    def decode(self, features: Mapping[str, torch.Tensor], size: Sequence[int], **extra) -> dict[str, torch.Tensor]:
        logits = self.head(features["layer4"])
        return {"out": F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)}

    def parts(self) -> dict[str, tuple[str, ...]]:
        return {"backbone": ("backbone",), "head": ("head",)}


@MODELS.register("torchvision_deeplabv3", example={"depth": 50})
def torchvision_deeplabv3(*, num_classes: int, depth: int = 50) -> TorchvisionDeepLabV3:
    """torchvision's DeepLab v3 (ResNet-``depth``, output stride 8, no auxiliary head, random weights)."""
    import torchvision

    if depth not in (50, 101):
        raise ConfigError("depth", f"torchvision builds DeepLab v3 on ResNet-50 or -101, got {depth}")
    build = getattr(torchvision.models.segmentation, f"deeplabv3_resnet{depth}")
    return TorchvisionDeepLabV3(build(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False))
