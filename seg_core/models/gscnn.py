"""Gated-SCNN (Takikawa et al. 2019, "Gated-SCNN: Gated Shape CNNs for Semantic Segmentation",
arXiv 1907.05740): a shape stream, gated by the regular stream, beside a DeepLab v3+ network.

* **Regular stream**: :func:`~seg_core.backbones.cascaded.cascaded_resnet`; ``output_stride``
  (the paper's is 8) and ``multi_grid`` are model options set on the pretrained trunk.
* **Shape stream** (Sec. 3.1, Fig. 2): it starts from the regular stream's *first* feature, as
  the public code starts it from its WideResNet-38's first layer (full resolution, 64 channels).
  On a ResNet that is the stem's convolution + BN + ReLU at stride 2, before the max pool
  (``stem``, returned by :meth:`GatedSCNN.extract` beside the blocks): 1x1 to ``shape_width`` (64)
  channels (our adaptation: the public code feeds its 64 channels as they are) and upsampled to
  the image; then three times: a residual block, a 1x1 convolution halving the channels
  (64 -> 32 -> 16 -> 8), and a :class:`GatedConv` gated by a deeper regular-stream feature
  (block2, block3, the top) reduced to one channel by a 1x1 and upsampled (``align_corners=True``,
  as the paper's code); a final 1x1 (8 -> 1, no bias) gives the boundary logits, returned as the
  output ``boundary`` (trained by ``boundary_bce``). Until issue 27 it started from block1 at
  stride 4 (the feature the v3+ decoder reads); every Gated-SCNN result before that is withdrawn.
* :class:`GatedConv` (Sec. 3.2, Eq. 1-2): ``alpha = sigmoid(BN(conv1x1(ReLU(conv1x1(BN([x, s]))))))``
  with C+1 -> C+1 -> 1 channels, ``out = conv1x1(x * (alpha + 1))`` (no bias). ``gated = False``
  (the ablation) drops the gate: ``out = conv1x1(x)``.
* **Fusion** (Sec. 3.3): the boundary probability and the image gradients (Canny on the raw uint8
  image: the model input ``image_gradients``) are concatenated, 1x1 -> sigmoid, and fed to ASPP as
  one more branch (1x1 -> BN -> ReLU at the ASPP's resolution). ``image_gradients = False`` (the
  ablation) fuses the boundary map alone.
* **ASPP and decoder** as DeepLab v3+ (:mod:`seg_core.models.deeplab_v3`); the logits are
  upsampled to the image.

**Image gradients** come from OpenCV's ``cv2.Canny(rgb, 10, 100)`` on each uint8 RGB image, as
the paper's code does (the optional extra ``gscnn``: ``opencv-python-headless``). Measured on 64
synthetic 64 px images, one thread: 0.29 ms per image (colour) against 7.3 ms for kornia's Canny
(grey; its Gaussian-smoothed, normalised gradients give different edges: IoU 0.16 with OpenCV's).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock
from torchvision.ops import Conv2dNormActivation

from seg_core.backbones.cascaded import set_output_stride
from seg_core.contract import Segmenter
from seg_core.layers import build_backbone
from seg_core.models.deeplab import scaled_dropout, scaled_rate
from seg_core.models.deeplab_v3 import PAPER_WIDTH, TINY_EXAMPLE, AtrousSpatialPyramidPooling, Decoder
from seg_core.registry import INPUTS, MODELS, ConfigError

INSTALL = 'Gated-SCNN\'s image gradients need OpenCV: pip install "segbench[gscnn]" (opencv-python-headless)'
PAPER_FEATURE_MAP = 100  # Gated-SCNN's 800 px Cityscapes crops at output stride 8 (Sec. 4)
STEM = "stem"  # the name of the stem's stride-2 feature among the extracted features


@INPUTS.register("image_gradients")
def image_gradients(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(N, 1, H, W) float: Canny edges (thresholds 10 / 100) of each raw uint8 RGB image, in {0, 1}."""
    try:
        import cv2
    except ImportError:
        raise ConfigError("model", INSTALL) from None
    images = batch["image"]
    if images.dtype != torch.uint8:
        raise ValueError("image_gradients needs the raw uint8 image (the batch's 'image'), not a normalised one")
    edges = [cv2.Canny(np.ascontiguousarray(im.permute(1, 2, 0).cpu().numpy()), 10, 100) for im in images]
    return torch.from_numpy(np.stack(edges))[:, None].to(images.device).float() / 255


class GatedConv(nn.Module):
    """Gated convolutional layer: the regular stream's ``s`` decides where the shape stream attends."""

    def __init__(self, channels: int, gated: bool = True) -> None:
        super().__init__()
        self.gated = gated
        if gated:
            self.gate = nn.Sequential(
                nn.BatchNorm2d(channels + 1),
                nn.Conv2d(channels + 1, channels + 1, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels + 1, 1, 1),
                nn.BatchNorm2d(1),
                nn.Sigmoid(),
            )
        self.out = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if not self.gated:
            return self.out(x)
        alpha = self.gate(torch.cat([x, s], dim=1))
        return self.out(x * (alpha + 1))


class ShapeStream(nn.Module):
    """stem feature -> [residual block -> 1x1 halving -> gated conv] x 3 -> 1x1 to the boundary logits."""

    def __init__(self, low_channels: int, gate_channels: Sequence[int], width: int, gated: bool) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(low_channels, width, 1)
        self.gate_inputs = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in gate_channels)
        blocks, halvings, gates = [], [], []
        c = width
        for _ in gate_channels:
            blocks.append(BasicBlock(c, c))
            halvings.append(nn.Conv2d(c, max(1, c // 2), 1))
            c = max(1, c // 2)
            gates.append(GatedConv(c, gated))
        self.blocks, self.halvings, self.gates = nn.ModuleList(blocks), nn.ModuleList(halvings), nn.ModuleList(gates)
        self.head = nn.Conv2d(c, 1, 1, bias=False)

    def forward(self, low: torch.Tensor, deep: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        up = lambda t: F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=True)  # noqa: E731
        x = up(self.reduce(low))
        for block, halve, gate, to_one, feature in zip(self.blocks, self.halvings, self.gates, self.gate_inputs, deep):
            x = gate(halve(block(x)), up(to_one(feature)))
        return self.head(x)


class EdgeASPP(AtrousSpatialPyramidPooling):
    """DeepLab v3's ASPP with one more branch: the fused edge map (1x1 -> BN -> ReLU)."""

    def __init__(self, in_channels: int, rates: Sequence[int], width: int, **options) -> None:
        super().__init__(in_channels, rates, width, **options)
        self.edge = Conv2dNormActivation(1, width, 1, bias=False)
        dropout = self.project[1].p
        self.project = nn.Sequential(
            Conv2dNormActivation((len(self.branches) + 1) * width, width, 1, bias=False), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, edge: torch.Tensor | None = None) -> torch.Tensor:
        edge = F.interpolate(edge, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return self.project(torch.cat([b(x) for b in self.branches] + [self.edge(edge)], dim=1))


class GatedSCNN(Segmenter):
    """Regular stream + shape stream + fusion into ASPP + v3+ decoder; outputs ``out`` and ``boundary``."""

    def __init__(self, backbone, shape: ShapeStream, fuse: nn.Conv2d, aspp: EdgeASPP, decoder: Decoder,
                 classifier: nn.Conv2d, use_gradients: bool, info: dict[str, Any]) -> None:  # fmt: skip
        super().__init__()
        self.backbone, self.shape, self.fuse = backbone, shape, fuse
        self.aspp, self.decoder, self.classifier = aspp, decoder, classifier
        self.use_gradients = use_gradients
        self.extra_inputs = ("image_gradients",) if use_gradients else ()
        names = backbone.stage_names
        self.low, self.deep = names[0], (names[1], names[2], backbone.top)
        self.decoder_inputs = tuple(dict.fromkeys((STEM, self.low, *self.deep)))
        self.info = info

    def extract(self, image: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The trunk's block features and, first, the stem's stride-2 feature (before its max
        pool): the shape stream's input."""
        *layers, pool = self.backbone.stem  # the layers themselves, not a slice (a new container)
        first = image
        for layer in layers:
            first = layer(first)
        features: OrderedDict[str, torch.Tensor] = OrderedDict([(STEM, first)])
        x = pool(first)
        for name in self.backbone.stage_names:
            x = self.backbone.stages[name](x)
            features[name] = x
        return features

    def decode(self, features: Mapping[str, torch.Tensor], size: Sequence[int], **extra) -> dict[str, torch.Tensor]:
        boundary = self.shape(features[STEM], [features[n] for n in self.deep], size)
        maps = [torch.sigmoid(boundary)]
        if self.use_gradients:
            grads = extra.get("image_gradients")
            if grads is None:  # the engine always passes them; counting MACs or checking a config on the
                grads = torch.zeros_like(maps[0])  # meta device has no raw image: zeros cost the same
            maps.append(grads)
        edge = torch.sigmoid(self.fuse(torch.cat(maps, dim=1)))
        x = self.aspp(features[self.backbone.top], edge)
        x = self.decoder(x, features[self.low])
        logits = F.interpolate(self.classifier(x), size=tuple(size), mode="bilinear", align_corners=False)
        return {"out": logits, "boundary": boundary}

    def parts(self) -> dict[str, tuple[str, ...]]:
        return {
            "backbone": ("backbone",),
            "shape": ("shape", "fuse"),
            "head": ("aspp", "classifier"),
            "decoder": ("decoder",),
        }

    def describe(self) -> dict[str, Any]:
        return dict(self.info)


_TINY = {**{k: v for k, v in TINY_EXAMPLE.items() if k != "decoder"}, "shape_width": 8}


@MODELS.register("gscnn", example=_TINY)
def gscnn(
    *,
    num_classes: int,
    backbone: str = "cascaded_resnet",
    backbone_options: dict[str, Any] | None = None,
    output_stride: int | None = None,
    multi_grid: Sequence[int] | None = None,
    aspp_rates: Sequence[int] = (12, 24, 36),
    width: int = 256,
    feature_map: int | None = None,
    paper_feature_map: int = PAPER_FEATURE_MAP,
    shape_width: int = 64,
    gated: bool = True,
    image_gradients: bool = True,
    low_level_channels: int = 48,
    decoder_convs: int = 2,
    decoder_width: int = 256,
    dropout: float = 0.1,
) -> GatedSCNN:
    """Gated-SCNN on a cascaded ResNet (see the module docstring). ``aspp_rates`` are the paper's
    at output stride 8 (12/24/36 on a 100-cell map); ``feature_map`` scales them to a smaller map.
    ``gated`` and ``image_gradients`` switch off the gates and the Canny input (the ablation).
    ``dropout`` is the rate after the ASPP projection at 256 channels (0.1, DeepLab's TF code;
    the paper gives none), scaled to ``width`` as DeepLab v3's
    (:func:`~seg_core.models.deeplab.scaled_dropout`)."""
    if backbone != "cascaded_resnet":
        raise ConfigError("backbone", f"Gated-SCNN runs on 'cascaded_resnet', got {backbone!r}")
    for key, value in (("width", width), ("shape_width", shape_width), ("low_level_channels", low_level_channels),
                       ("decoder_width", decoder_width)):  # fmt: skip
        if value < 1:
            raise ConfigError(key, f"expected an integer >= 1, got {value}")
    net = build_backbone(backbone, backbone_options)
    set_output_stride(net, output_stride or net.output_stride, multi_grid or net.multi_grid)  # on one pretrained trunk
    if not 0 <= dropout < 1:
        raise ConfigError("dropout", f"expected a probability in [0, 1), got {dropout}")
    if len(net.stage_names) < 4:
        raise ConfigError("backbone_options", "the shape stream needs block1-block4")
    if not (isinstance(net.stem, nn.Sequential) and isinstance(net.stem[-1], nn.MaxPool2d)):
        raise ConfigError("backbone", "the shape stream reads the stem's feature before its max pool")
    names = net.stage_names
    stem_channels = next(m for m in net.stem if isinstance(m, nn.Conv2d)).out_channels
    shape = ShapeStream(stem_channels, [net.out_channels[n] for n in (names[1], names[2], net.top)], shape_width, gated)
    rates = [scaled_rate(r, feature_map, paper_feature_map) for r in aspp_rates]
    used_dropout = scaled_dropout(dropout, width / PAPER_WIDTH)
    aspp = EdgeASPP(net.out_channels[net.top], rates, width, dropout=used_dropout)
    decoder = Decoder(width, net.out_channels[names[0]], low_level_channels, decoder_convs, decoder_width, 3)
    info = {"output_stride": net.output_stride, "aspp_rates": rates, "paper_aspp_rates": list(aspp_rates),
            "gated": gated, "image_gradients": image_gradients, "dropout_at_256": dropout,
            "dropout": round(used_dropout, 6)}  # fmt: skip
    return GatedSCNN(
        net, shape, nn.Conv2d(2 if image_gradients else 1, 1, 1), aspp, decoder,
        nn.Conv2d(decoder.out_channels, num_classes, 1), image_gradients, info,
    )  # fmt: skip
