"""The network the mini scale pretrains its backbones with."""

from __future__ import annotations

from seg_core.models import gcn


def pretraining_network(backbone: str, backbone_options: dict | None, num_classes: int):
    """The network the mini scale pretrains a backbone with: the backbone and a 1x1 classifier
    on its top map, trained densely (the papers start from pretrained backbones; this is the
    stand-in). Only its backbone's weights are kept."""
    return gcn.single_head(
        num_classes=num_classes, backbone=backbone, head="pointwise", backbone_options=backbone_options
    )
