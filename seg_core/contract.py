"""The model contract every family follows (GCN, DeepLab, ICNet, Gated-SCNN), written once.

* ``model(image, **extra_inputs)`` returns a dict of named outputs. ``"out"`` holds the main
  logits at the input resolution; auxiliary outputs (ICNet's cascade branches, Gated-SCNN's
  boundary map) use other names and are read by the loss terms named after them. Outputs that
  exist only for training (cascade label guidance) appear only in training mode.
* ``image`` is the normalised float image (N, 3, H, W). ``extra_inputs`` are named in
  ``model.extra_inputs`` and made from the batch by the :data:`~seg_core.registry.INPUTS`
  makers of those names (e.g. image gradients from the raw uint8 image).
* ``model.extract(image)`` runs the trunk, the part an engine may freeze, pretrain and cache;
  it returns the features ``model.decode(features, size, **extra_inputs)`` reads
  (``model.decoder_inputs`` names them). ``model(image) == decode(extract(image), image size)``.
* ``model.backbone`` is the :class:`~seg_core.backbones.StagedBackbone` whose weights are
  pretrained/loaded; ``model.decoder_parameters()`` is everything trained on top of it.
* ``model.aliases`` names the top-level children that deliberately reuse modules of another
  child (ICNet's sub4 branch continues through sub2's blocks); no other module is shared.
* ``model.reconfigure(**options)`` changes a trained model for evaluation (``eval.model``), e.g.
  another output stride on the same weights; by default every option is refused.
* ``model.parts()`` groups the top-level children into named parts (``backbone``, ``head``,
  ``decoder``...) for parameter and MAC counts (:func:`seg_core.complexity.model_complexity`).

:class:`Segmenter` implements the defaults (trunk = the backbone, one ``decoder`` part).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from seg_core.backbones.base import StagedBackbone
from seg_core.registry import ConfigError


@runtime_checkable
class SegmentationModel(Protocol):
    backbone: StagedBackbone
    decoder_inputs: tuple[str, ...]
    extra_inputs: tuple[str, ...]

    def __call__(self, image: torch.Tensor, **extra_inputs: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def extract(self, image: torch.Tensor) -> Mapping[str, torch.Tensor]: ...

    def decode(
        self, features: Mapping[str, torch.Tensor], size: Sequence[int], **extra_inputs: torch.Tensor
    ) -> dict[str, torch.Tensor]: ...

    def decoder_parameters(self) -> list[nn.Parameter]: ...

    def parts(self) -> dict[str, tuple[str, ...]]: ...


class Segmenter(nn.Module):
    """Base class with the contract's defaults; a family overrides ``decode`` (and ``extract``,
    ``parts`` where its trunk or parts differ)."""

    backbone: StagedBackbone
    decoder_inputs: tuple[str, ...] = ()
    extra_inputs: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # top-level children that are, by design, modules of another child

    def extract(self, image: torch.Tensor) -> Mapping[str, torch.Tensor]:
        return self.backbone(image)

    def decode(
        self, features: Mapping[str, torch.Tensor], size: Sequence[int], **extra_inputs: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, image: torch.Tensor, **extra_inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.extract(image), image.shape[-2:], **extra_inputs)

    def decoder_parameters(self) -> list[nn.Parameter]:
        backbone = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone]

    def parts(self) -> dict[str, tuple[str, ...]]:
        rest = tuple(name for name, _ in self.named_children() if name != "backbone")
        return {"backbone": ("backbone",), "decoder": rest}

    def reconfigure(self, **options) -> None:
        """Change the trained model for evaluation (``eval.model`` in a spec), e.g. a DeepLab
        model trained at output stride 16 evaluated at 8 by changing dilations on its weights.
        A family that supports an option overrides this; by default every option is refused."""
        for key in options:
            raise ConfigError(key, f"{type(self).__name__} cannot be reconfigured for evaluation")
