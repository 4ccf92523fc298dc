"""Pieces shared by the model families: building a named backbone with errors that name the
option, and counting weights the way the papers do."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from seg_core.backbones.base import StagedBackbone
from seg_core.registry import BACKBONES, ConfigError


def build_backbone(name: str, options: dict[str, Any] | None) -> StagedBackbone:
    """``BACKBONES.build(name, **options)``; an unknown name or option raises :class:`ConfigError`
    keyed ``backbone`` / ``backbone_options.<option>``."""
    if name not in BACKBONES:
        raise ConfigError("backbone", f"unknown backbone {name!r}; expected one of {BACKBONES.names()}")
    accepted = [p.name for p in inspect.signature(BACKBONES.get(name)).parameters.values() if p.kind == p.KEYWORD_ONLY]
    for key in options or {}:
        if key not in accepted:
            raise ConfigError(
                f"backbone_options.{key}", f"unknown option for backbone {name!r}; expected one of {accepted}"
            )
    try:
        return BACKBONES.build(name, **(options or {}))
    except ConfigError as e:
        raise e.within("backbone_options") from None
    except TypeError as e:  # an option the builder does not take
        raise ConfigError("backbone_options", f"{e} (backbone {name!r})") from None


def weight_count(module: nn.Module) -> int:
    """Number of convolution/linear weights, biases and norm parameters excluded.

    The convention of Large Kernel Matters' Tables 2 and 4 (its GCN k=5 figure, 434K, is 434,490
    weights; with the 84 biases it would round to 435K).
    """
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)))
