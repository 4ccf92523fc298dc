"""Latency of the Fig. 4 heads at the paper's configuration (res-5: 2048 ch, 16x16 map, 21 classes).

Table 2's point in time rather than parameters: the GCN's separable k x 1 / 1 x k pair against
the dense k x k convolution. Run with ``pytest benchmarks --benchmark-only``.
"""

import pytest
import torch

from benchmarks.conftest import DEVICES, bench_forward
from seg_core.complexity import count_macs
from seg_core.layers import weight_count
from seg_core.models.gcn import GlobalConvolution, LargeKernelConv, PointwiseClassifier

SHAPE = (1, 2048, 16, 16)


def _head(kind: str, k: int):
    if kind == "pointwise":
        return PointwiseClassifier(2048, 21)
    return GlobalConvolution(2048, 21, k) if kind == "gcn" else LargeKernelConv(2048, 21, k)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind,k", [("pointwise", 1)] + [(kind, k) for kind in ("gcn", "trivial") for k in (3, 7, 15)])
def test_head_latency(benchmark, device, kind, k):
    head = _head(kind, k)
    bench_forward(
        benchmark,
        head,
        torch.randn(SHAPE),
        device,
        head=kind,
        k=k,
        weights=weight_count(head),
        gmac=count_macs(head, SHAPE) / 1e9,
    )
