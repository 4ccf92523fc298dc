"""ICNet's timing tables (Zhao et al. 2018), measured: per-stage PSPNet-50 time (Fig. 1b), the
three ways of making PSPNet-50 cheaper (Fig. 5 and Table 1), ICNet's branches against the
half-channel PSPNet-50 (Table 2, with peak memory) and CFF against plain convolutions (Table 3).

Batch 1, inference mode, 19 classes (Cityscapes), at the paper's 1024 x 2048 (and 512 x 1024
for Fig. 1b). CPU always, CUDA where available. Absolute times depend on the hardware (the
paper used a Maxwell TitanX); the report compares *ratios* measured in one run with the
paper's ratios. Every benchmark records in ``extra_info`` which table and item it is, the
paper's time for that item (ms, where the paper gives one), MACs, and peak memory.

``SEGBENCH_BENCH_ROUNDS`` (default 3 on CPU, 10 on CUDA) and ``SEGBENCH_BENCH_WARMUP``
(default 1 on CPU, 3 on CUDA) set the rounds. On 2 CPU cores the whole suite takes about five
minutes: a full-width PSPNet-50 forward at 1024 x 2048 is 1.5 TMAC (about 9 s).

Run: ``pytest benchmarks/test_icnet_timing.py --benchmark-only`` or ``nox -s benchmark-icnet``.
"""

from __future__ import annotations

import os
from functools import cache

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.conftest import DEVICES, device_info, timed_forward
from benchmarks.memory_probe import peak_forward_memory_mb
from seg_core.complexity import count_parameters
from seg_core.icnet import ICNet, PSPNet

NUM_CLASSES = 19
# The paper's resolution; SEGBENCH_ICNET_FULL="HxW" shrinks it for a quick smoke run (ratios then
# mean little: the point of the tables is the full resolution).
FULL = tuple(int(v) for v in os.environ.get("SEGBENCH_ICNET_FULL", "1024x2048").split("x"))
HALF = (FULL[0] // 2, FULL[1] // 2)


def _rounds(device: str) -> tuple[int, int]:
    rounds = int(os.environ.get("SEGBENCH_BENCH_ROUNDS", 3 if device == "cpu" else 10))
    warmup = int(os.environ.get("SEGBENCH_BENCH_WARMUP", 1 if device == "cpu" else 3))
    return rounds, warmup


def _build(kind: str, **options) -> nn.Module:
    return (PSPNet(NUM_CLASSES, **options) if kind == "pspnet50" else ICNet(NUM_CLASSES, **options)).eval()


@cache
def _model(kind: str, device: str, **options) -> nn.Module:
    """One instance per (kind, device, options), reused across benchmarks."""
    torch.manual_seed(0)
    return _build(kind, **options).to(device)


@cache
def _macs(kind: str, size: tuple[int, int], stage: str | None = None, **options) -> int:
    """Multiply-accumulates, counted on the meta device (no computation, exact for convs and matmuls)."""
    with torch.device("meta"):
        model = _build(kind, **options)
        x = torch.zeros(1, 3, *size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad():
        if stage is None:
            with counter:
                model(x)
        else:
            for name, module in model.stages():
                if name == stage:
                    with counter:
                        module(x)
                    break
                x = module(x)
    return counter.get_total_flops() // 2


def _run(benchmark, fn, x: torch.Tensor, device: str, *, macs: int | None, memory: tuple | None = None, **info) -> None:
    """Time ``fn(x)`` (inference mode, synchronised on CUDA). With ``memory`` = (kind, size,
    options), also record the forward's peak memory: CUDA max_memory_allocated in process, CPU
    peak resident set in a fresh process (:mod:`benchmarks.memory_probe`)."""
    target = timed_forward(fn, x, device)
    peak = None
    if memory is not None and device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        target()
        peak = (torch.cuda.max_memory_allocated() - start) / 2**20
    elif memory is not None:
        peak = peak_forward_memory_mb(*memory)
    rounds, warmup = _rounds(device)
    benchmark.extra_info.update({
        **device_info(device, x),
        "gmac": None if macs is None else macs / 1e9,
        "peak_memory_mb": peak,
        "memory_convention": None if memory is None else (
            "CUDA max_memory_allocated above the level before the forward" if device == "cuda"
            else "CPU peak resident set (VmHWM) above the resident set before the forward, fresh process"),
        "unit": "seconds per forward, batch 1",
        **info,
    })
    benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=warmup)


def _image(size: tuple[int, int], device: str) -> torch.Tensor:
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)


# ---------------------------------------------------------------- Fig. 1b: time per stage
@cache
def _stage_inputs(size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The input of every PSPNet-50 stage for one image of ``size`` (computed once, on CPU)."""
    model = _model("pspnet50", "cpu")
    x = _image(size, "cpu")
    inputs = {}
    with torch.inference_mode():
        for name, stage in model.stages():
            inputs[name] = x
            x = stage(x)
    return inputs


STAGES = ["stem", "res2", "res3", "res4", "res5", "psp", "head"]
# Fig. 1b is a plot; the text says stage 5 (res5) costs about 4x stage 4 (res4) at 1024 x 2048.
PAPER_RES5_OVER_RES4 = 4.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [FULL, HALF], ids=["full", "half"])
@pytest.mark.parametrize("stage", STAGES)
def test_fig1b_pspnet50_stage(benchmark, device, size, stage):
    module = dict(_model("pspnet50", device).stages())[stage]
    x = _stage_inputs(size)[stage].to(device)
    extra = {"paper_res5_over_res4": PAPER_RES5_OVER_RES4} if stage == "res5" else {}
    _run(benchmark, module, x, device, macs=_macs("pspnet50", size, stage), **extra,
         table="fig1b", item=stage, resolution=f"{size[0]}x{size[1]}", scale=1.0 if size == FULL else 0.5)


# ------------------------------------- Fig. 5 / Table 1: three ways to make PSPNet-50 cheaper
PAPER_FIG5 = {0.25: 42, 0.5: 123, 1.0: 446}
PAPER_STRIDE = {8: 446, 16: 177, 32: 131}
PAPER_KERNELS = {1.0: 446, 0.5: 170, 0.25: 72}


def _pspnet_forward(benchmark, device, size, *, table, item, paper_ms, **options):
    model = _model("pspnet50", device, **options)
    x = _image(size, device)
    extra = {}
    if table == "table1_kernels" and options.get("width") == 0.5:  # also Table 2's baseline
        extra = {"memory": ("pspnet50", size, options), "paper_mem_gb": PAPER_MEM_GB["baseline"]}
    _run(benchmark, model, x, device, macs=_macs("pspnet50", size, **options), **extra, table=table, item=item, paper_ms=paper_ms,
         resolution=f"{size[0]}x{size[1]}", params=count_parameters(model), **{f"model_{k}": v for k, v in options.items()})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale", [0.25, 0.5, 1.0])
def test_fig5_input_downsampled(benchmark, device, scale):
    size = (int(FULL[0] * scale), int(FULL[1] * scale))
    _pspnet_forward(benchmark, device, size, table="fig5_input", item=scale, paper_ms=PAPER_FIG5[scale])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stride", [16, 32])  # 8 is test_fig5_input_downsampled[1.0]
def test_table1_feature_downsampled(benchmark, device, stride):
    _pspnet_forward(benchmark, device, FULL, table="table1_feature", item=stride, paper_ms=PAPER_STRIDE[stride],
                    output_stride=stride)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("keep", [0.5, 0.25])  # 1.0 is test_fig5_input_downsampled[1.0]
def test_table1_kernels_kept(benchmark, device, keep):
    _pspnet_forward(benchmark, device, FULL, table="table1_kernels", item=keep, paper_ms=PAPER_KERNELS[keep], width=keep)


# ------------------------------------------------- Table 2 / Table 3: ICNet at 1024 x 2048
# (Table 2's baseline, the half-channel PSPNet-50 at 170 ms in the paper, is the kernels-kept 0.5
# benchmark above; its peak memory is measured there.)
PAPER_BRANCHES = {"sub4": 18, "sub24": 25, "sub124": 33}
PAPER_MEM_GB = {"baseline": 9.2, "sub4": 0.6, "sub24": 1.1, "sub124": 1.6}  # Table 2, TitanX
PAPER_FUSION = {"cff": 33, "dc3": 31, "dc5": 34, "dc7": 38}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("branches", ["sub4", "sub24", "sub124"])
def test_table2_icnet_branches(benchmark, device, branches):
    model = _model("icnet", device, branches=branches)
    _run(benchmark, model, _image(FULL, device), device, macs=_macs("icnet", FULL, branches=branches),
         memory=("icnet", FULL, {"branches": branches}), table="table2", item=branches,
         paper_ms=PAPER_BRANCHES[branches], paper_mem_gb=PAPER_MEM_GB[branches], resolution="1024x2048", params=count_parameters(model))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fusion", ["dc3", "dc5", "dc7"])  # cff is test_table2_icnet_branches[sub124]
def test_table3_fusion(benchmark, device, fusion):
    model = _model("icnet", device, fusion=fusion)
    _run(benchmark, model, _image(FULL, device), device, macs=_macs("icnet", FULL, fusion=fusion), table="table3", item=fusion,
         paper_ms=PAPER_FUSION[fusion], resolution="1024x2048", params=count_parameters(model))
