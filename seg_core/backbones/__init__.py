"""Every trunk, as a :class:`StagedBackbone` returning its stage features (``layer1``...); one
module per trunk family, so adding a trunk touches no other.

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
* ``cascaded_resnet``: DeepLab v3's ResNet-50/101 with block4 copied as block5-7, any output
  stride 4-256, multi-grid from block4 on, reconfigurable to another output stride on the same
  weights (:func:`set_output_stride`); ``width`` scales it to the mini scale.

A stage that dilates follows :func:`atrous_schedule`: once the cumulative stride reaches the
output stride, later stages keep the resolution and multiply their dilation by the stride they
skip (Chen et al., DeepLab v3, Sec. 3.1).
"""

from seg_core.backbones import cascaded, gcn, mini, pspnet, resnet, vgg  # noqa: F401  (register the builders)
from seg_core.backbones.base import StagedBackbone, atrous_schedule, bottleneck_stage, receptive_field
from seg_core.backbones.cascaded import cascaded_resnet, set_output_stride
from seg_core.backbones.gcn import (
    FactorizedLargeKernel,
    GCNBottleneck,
    gcn_block_weights,
    gcn_stage,
    matched_mid_width,
    mini_resnet_gcn,
    resnet50_gcn,
)
from seg_core.backbones.mini import mini_resnet
from seg_core.backbones.pspnet import dilated_resnet50
from seg_core.registry import BACKBONES


def weights_enum(backbone: str, options: dict):
    """The torchvision weights enum that ``options["pretrained"]`` names for ``backbone`` (None
    without a name); raises :class:`~seg_core.registry.ConfigError` for an unknown name and
    ``KeyError`` when the backbone has no published weights. A backbone registers
    ``check_weights(name)``, or ``check_weights(name, options)`` where its options pick the
    architecture (``cascaded_resnet``'s depth)."""
    import inspect

    name = options.get("pretrained")
    if name is None:
        return None
    check = BACKBONES.metadata(backbone).get("check_weights")
    if check is None:
        raise KeyError(backbone)
    return check(name, options) if len(inspect.signature(check).parameters) == 2 else check(name)


__all__ = [
    "BACKBONES",
    "FactorizedLargeKernel",
    "GCNBottleneck",
    "StagedBackbone",
    "atrous_schedule",
    "bottleneck_stage",
    "cascaded_resnet",
    "dilated_resnet50",
    "gcn_block_weights",
    "gcn_stage",
    "matched_mid_width",
    "mini_resnet",
    "mini_resnet_gcn",
    "receptive_field",
    "resnet50_gcn",
    "set_output_stride",
    "weights_enum",
]
