"""Benchmark helpers: device list (CPU always, CUDA when present) and a synchronised timer."""

from __future__ import annotations

import functools
import time

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


@functools.lru_cache(maxsize=4)
def calibration(device: str, threads: int) -> dict:
    """The machine's speed when the benchmarks ran (measured once per session and device), so
    that absolute times can be read across machines: fp32 matmul GFLOP/s, 512 x 512 on the CPU
    (on the benchmarks' threads, as the ablation runs record it), 4096 x 4096 on CUDA."""
    if device != "cuda":
        from ablations.execute import calibration_gflops

        return {
            "calibration_gflops": calibration_gflops(threads),
            "calibration": f"fp32 matmul 512x512, {threads} threads",
        }
    a, b = torch.randn(4096, 4096, device="cuda"), torch.randn(4096, 4096, device="cuda")
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
        rates.append(10 * 2 * 4096**3 / (time.perf_counter() - t0) / 1e9)
    return {"calibration_gflops": round(sorted(rates)[2], 1), "calibration": "fp32 matmul 4096x4096 on the GPU"}


def device_info(device: str, x: torch.Tensor) -> dict:
    """What every benchmark records about where and how it ran, with the machine's calibration."""
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        **calibration(device, torch.get_num_threads()),
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
