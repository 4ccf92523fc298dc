"""Parameter and multiply-accumulate (MAC) counts.

MACs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per
multiply-accumulate of convolutions and matrix products and ignores element-wise work
(BN, ReLU, additions, interpolation); we divide by two and report **MACs**.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block; afterwards every submodule gets back its own
    mode (``module.train(was_training)`` would also flip a frozen backbone kept in eval mode)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...], **extra_inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on a zero tensor of ``input_shape`` (N, C, H, W),
    in eval mode (BN statistics untouched); the model's modes are restored afterwards."""
    with eval_mode(model):
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.zeros(input_shape), **extra_inputs)
        return counter.get_total_flops() // 2


def model_complexity(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Parameters and MACs of a segmentation model, split into backbone and decoder.

    The backbone part is what the model runs of its backbone: ``model.extract`` where the
    model defines it (ICNet runs its trunk on the 1/2 and 1/4 images, not on the input),
    else ``model.backbone`` on the input. The decoder is the rest (heads, fusion, refinement,
    upsampling). MACs as in :func:`count_macs`.
    """
    total_p, total_m = count_parameters(model), count_macs(model, input_shape)
    out = {"params_total": total_p, "macs_total": total_m}
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        bb_p = count_parameters(backbone)
        bb_m = count_macs(_Extract(model) if hasattr(model, "extract") else backbone, input_shape)
        out.update({"params_backbone": bb_p, "macs_backbone": bb_m,
                    "params_decoder": total_p - bb_p, "macs_decoder": total_m - bb_m})
    return out


class _Extract(nn.Module):
    """``model.extract`` as a module, so :func:`count_macs` runs it in eval mode (BN stats untouched)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.extract(x)
