"""The timing tables, measured: every ``kind = "timing"`` spec in ``ablations/specs``.

The specs hold the parameters (models, input sizes, stages, which items need peak memory) and
the paper's figures; this suite only measures. Each distinct measurement (model, classes, input
size, stage, memory) runs once, and names in ``extra_info["measures"]`` every (spec, item) it
serves (the full PSPNet-50 at 1024x2048 is Fig. 5's scale 1.0, Table 1's stride 8 and keep 1.0).
Batch 1, inference mode, random weights (time does not depend on them), CPU always, CUDA where
available. ``SEGBENCH_BENCH_ROUNDS`` (default 3 on CPU, 10 on CUDA) and ``SEGBENCH_BENCH_WARMUP``
(default 1 on CPU, 3 on CUDA) set the rounds. These run at the papers' resolutions (a 1024x2048
PSPNet-50 forward is 1.5 TMAC, about 9 s on 2 CPU cores), so they run only with
``--benchmark-only``: ``nox -s benchmarks`` writes ``results/benchmarks/timing-<device>.json``.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ablations.schema import load_specs
from benchmarks.conftest import DEVICES, device_info, timed_forward
from benchmarks.memory_probe import peak_forward_memory_mb
from seg_core.complexity import count_parameters
from seg_core.registry import MODELS

SPEC_DIR = Path(__file__).resolve().parent.parent / "ablations" / "specs"


def _measurements() -> dict[str, dict]:
    """Every distinct measurement of the timing specs (``SEGBENCH_TIMING_SPEC``: of that spec only)."""
    only = os.environ.get("SEGBENCH_TIMING_SPEC")
    out: dict[str, dict] = {}
    for spec in load_specs(SPEC_DIR)[0]:
        if spec.kind != "timing" or (only and spec.id != only):
            continue
        for item in spec.items:
            what = {
                "model": item.model,
                "num_classes": spec.num_classes,
                "input_size": list(item.input_size),
                "stage": item.stage,
                "memory": item.memory,
            }
            key = json.dumps(what, sort_keys=True)
            out.setdefault(key, {**what, "measures": [], "id": f"{spec.id}:{item.name}".replace(" ", "")})
            out[key]["measures"].append([spec.id, item.name])
    return out


MEASUREMENTS = _measurements()


def _rounds(device: str) -> tuple[int, int]:
    rounds = int(os.environ.get("SEGBENCH_BENCH_ROUNDS", 3 if device == "cpu" else 10))
    warmup = int(os.environ.get("SEGBENCH_BENCH_WARMUP", 1 if device == "cpu" else 3))
    return rounds, warmup


def _build(model_json: str, num_classes: int) -> nn.Module:
    cfg = json.loads(model_json)
    return MODELS.build(cfg["name"], num_classes=num_classes, **{k: v for k, v in cfg.items() if k != "name"}).eval()


@cache
def _model(model_json: str, num_classes: int, device: str) -> nn.Module:
    torch.manual_seed(0)
    return _build(model_json, num_classes).to(device)


@cache
def _macs(model_json: str, num_classes: int, size: tuple[int, int], stage: str | None) -> int:
    """Multiply-accumulates, counted on the meta device (no computation)."""
    with torch.device("meta"):
        model = _build(model_json, num_classes)
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


@cache
def _stage_input(model_json: str, num_classes: int, size: tuple[int, int], stage: str) -> torch.Tensor:
    """The input of one stage of ``model.stages()`` for an image of ``size`` (computed on CPU)."""
    model = _model(model_json, num_classes, "cpu")
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for name, module in model.stages():
            if name == stage:
                return x
            x = module(x)
    raise KeyError(f"the model has no stage {stage!r}; stages: {[n for n, _ in model.stages()]}")


@pytest.mark.paper_resolution
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("key", list(MEASUREMENTS), ids=[m["id"] for m in MEASUREMENTS.values()])
def test_timing(benchmark, device, key):
    m = MEASUREMENTS[key]
    model_json, size = json.dumps(m["model"], sort_keys=True), tuple(m["input_size"])
    model = _model(model_json, m["num_classes"], device)
    if m["stage"] is None:
        fn, x = model, torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    else:
        fn, x = (
            dict(model.stages())[m["stage"]],
            _stage_input(model_json, m["num_classes"], size, m["stage"]).to(device),
        )
    target = timed_forward(fn, x, device)
    peak = None
    if m["memory"] and device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        target()
        peak = (torch.cuda.max_memory_allocated() - start) / 2**20
    elif m["memory"]:
        peak = peak_forward_memory_mb(m["model"], m["num_classes"], size)
    rounds, warmup = _rounds(device)
    benchmark.extra_info.update(
        {
            **device_info(device, x),
            "measures": m["measures"],
            "model": m["model"],
            "stage": m["stage"],
            "resolution": f"{size[0]}x{size[1]}",
            "gmac": _macs(model_json, m["num_classes"], size, m["stage"]) / 1e9,
            "params": count_parameters(model),
            "peak_memory_mb": peak,
            "memory_convention": None
            if not m["memory"]
            else (
                "CUDA max_memory_allocated above the level before the forward"
                if device == "cuda"
                else "CPU peak resident set (VmHWM) above the resident set before the forward, fresh process"
            ),
            "unit": "seconds per forward, batch 1",
        }
    )
    benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=warmup)
