"""Parameter and multiply-accumulate (MAC) counts.

MACs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per
multiply-accumulate of convolutions and matrix products and ignores element-wise work
(BN, ReLU, additions, interpolation); we divide by two and report **MACs**.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...], **extra_inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on a zero tensor of ``input_shape`` (N, C, H, W)."""
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.zeros(input_shape), **extra_inputs)
        return counter.get_total_flops() // 2
    finally:
        model.train(was_training)



def model_complexity(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Parameters and MACs of a segmentation model, split into backbone and decoder.

    ``model.backbone`` is counted on its own on the same input; the decoder is the rest
    (heads, refinement, fusion, upsampling). MACs as in :func:`count_macs`.
    """
    total_p, total_m = count_parameters(model), count_macs(model, input_shape)
    out = {"params_total": total_p, "macs_total": total_m}
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        bb_p, bb_m = count_parameters(backbone), count_macs(backbone, input_shape)
        out.update({"params_backbone": bb_p, "macs_backbone": bb_m,
                    "params_decoder": total_p - bb_p, "macs_decoder": total_m - bb_m})
    return out
