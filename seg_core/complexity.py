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


def model_complexity(model: nn.Module, input_shape: tuple[int, ...], **extra_inputs: torch.Tensor) -> dict:
    """Parameters, weights and MACs of a segmentation model, in total and per named part.

    Parts are the model's :meth:`~seg_core.contract.Segmenter.parts` (groups of top-level
    children, e.g. ``backbone`` and ``head``; for ICNet the trunk is the backbone plus the
    res3 blocks it shares). One forward pass in eval mode under ``FlopCounterMode``; each
    part's MACs are those of the convolution/linear modules inside it (every multiply-add of
    these models is in such a module: the sum over parts equals the total, checked).
    ``weights`` counts convolution/linear weights only (the convention of Large Kernel
    Matters' tables); ``params`` counts everything. Works on the ``meta`` device.
    """
    from seg_core.layers import weight_count

    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad(), counter:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        model(torch.zeros(input_shape, device=device), **extra_inputs)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    total_macs = sum(counts.get("Global", {}).values()) // 2
    parts_of = model.parts() if hasattr(model, "parts") else {"model": tuple(n for n, _ in model.named_children())}
    owner = {child: part for part, children in parts_of.items() for child in children}
    leaves = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))}
    macs = dict.fromkeys(parts_of, 0)
    for key, ops in counts.items():
        name = key.removeprefix(f"{root}.")
        if name in leaves or (key != name and _leaf_alias(model, name)):
            macs[owner[name.split(".")[0]]] += sum(ops.values()) // 2
    out = {
        "total": {"params": count_parameters(model), "weights": weight_count(model), "macs": total_macs},
        "parts": {},
    }
    if sum(macs.values()) != total_macs:  # some multiply-add happened outside conv/linear modules
        macs = dict.fromkeys(parts_of)
    for part, children in parts_of.items():
        modules = [getattr(model, c) for c in children if getattr(model, c, None) is not None]
        params = {id(p): p.numel() for m in modules for p in m.parameters()}
        weights = {
            id(m.weight): m.weight.numel()
            for mod in modules
            for m in mod.modules()
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
        }
        out["parts"][part] = {"params": sum(params.values()), "weights": sum(weights.values()), "macs": macs[part]}
    return out


def _leaf_alias(model: nn.Module, name: str) -> bool:
    """True when ``name`` (a path the flop counter saw) is a conv/linear module of ``model``."""
    try:
        return isinstance(model.get_submodule(name), (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    except AttributeError:
        return False
