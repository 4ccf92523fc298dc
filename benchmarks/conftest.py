"""Benchmark helpers: device list (CPU always, CUDA when present) and a synchronised timer."""

from __future__ import annotations

import pytest
import torch

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
    ),
]


def timed_forward(fn, x: torch.Tensor, device: str):
    """``fn(x)`` in inference mode as a zero-argument target, synchronised on CUDA so that the
    timer measures the computation, not its launch."""

    def target():
        with torch.inference_mode():
            out = fn(x)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return target


def device_info(device: str, x: torch.Tensor) -> dict:
    """What every benchmark records about where and how it ran."""
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "input_shape": list(x.shape),
    }


def bench_forward(benchmark, module: torch.nn.Module, x: torch.Tensor, device: str, **info) -> None:
    """Time ``module(x)`` at batch ``x.shape[0]`` in inference mode, synchronising on CUDA."""
    module = module.to(device).eval()
    x = x.to(device)
    benchmark.extra_info.update(
        {
            **device_info(device, x),
            "unit": "seconds per forward (pytest-benchmark); batch as in input_shape",
            **info,
        }
    )
    benchmark.pedantic(timed_forward(module, x, device), rounds=10, iterations=1, warmup_rounds=2)


def pytest_collection_modifyitems(config, items):
    """Benchmarks at the papers' resolutions run only with ``--benchmark-only`` (bare ``pytest``
    stays quick); the quick head benchmarks run either way."""
    if config.getoption("benchmark_only", default=False):
        return
    skip = pytest.mark.skip(reason="timing at the paper's resolution: run with --benchmark-only (nox -s benchmarks)")
    for item in items:
        if item.get_closest_marker("paper_resolution"):
            item.add_marker(skip)
