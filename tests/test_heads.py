"""Fig. 4 heads and BR: shapes, closed-form parameter counts, the paper's Tables 2 and 4."""

import pytest
import torch
from torch import nn

from seg_core.layers import weight_count
from seg_core.models.gcn import (
    BoundaryRefinement,
    GlobalConvolution,
    LargeKernelConv,
    PointwiseClassifier,
    StackedConv3x3,
)
from seg_core.registry import HEADS, ConfigError


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("k", [1, 3, 7, 15])
def test_gcn_shape_and_closed_form_count(k):
    c, n = 12, 5
    m = GlobalConvolution(c, n, k)
    x = torch.randn(2, c, 9, 11, requires_grad=True)
    y = m(x)
    assert y.shape == (2, n, 9, 11)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert weight_count(m) == 2 * k * n * (c + n)
    assert n_params(m) == 2 * k * n * (c + n) + 4 * n  # four biases of n channels


def test_gcn_is_linear_and_has_no_norm_or_activation():
    m = GlobalConvolution(4, 3, 5)
    assert not any(isinstance(x, (nn.BatchNorm2d, nn.ReLU)) for x in m.modules())
    assert all(conv.bias is not None for conv in m.modules() if isinstance(conv, nn.Conv2d))
    a, b = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    zero = m(torch.zeros_like(a))
    torch.testing.assert_close(m(a + b) - zero, (m(a) - zero) + (m(b) - zero), atol=1e-5, rtol=1e-5)


def test_gcn_receptive_field_is_k_by_k():
    k = 7
    m = GlobalConvolution(1, 1, k)
    x = torch.zeros(1, 1, 15, 15, requires_grad=True)
    m(x)[0, 0, 7, 7].backward()
    support = (x.grad[0, 0] != 0).nonzero()
    assert support[:, 0].min() == 7 - k // 2 and support[:, 0].max() == 7 + k // 2
    assert support[:, 1].min() == 7 - k // 2 and support[:, 1].max() == 7 + k // 2


@pytest.mark.parametrize("k", [3, 5, 9])
def test_trivial_and_stack_counts(k):
    c, n, m = 10, 4, 6
    conv = LargeKernelConv(c, n, k)
    assert conv(torch.randn(1, c, 12, 12)).shape == (1, n, 12, 12)
    assert weight_count(conv) == c * n * k * k and n_params(conv) == c * n * k * k + n
    stack = StackedConv3x3(c, n, k, m)
    depth = (k - 1) // 2
    assert len(stack) == depth
    assert stack(torch.randn(1, c, 12, 12)).shape == (1, n, 12, 12)
    expected = 9 * (c * n if depth == 1 else c * m + (depth - 2) * m * m + m * n)
    assert weight_count(stack) == expected


def test_pointwise_head():
    m = PointwiseClassifier(8, 3)
    assert m(torch.randn(2, 8, 5, 5)).shape == (2, 3, 5, 5)
    assert n_params(m) == 8 * 3 + 3


@pytest.mark.parametrize("bad", [0, 2, 4, -3, 14])
def test_even_or_nonpositive_k_rejected(bad):
    for build in (lambda: GlobalConvolution(4, 2, bad), lambda: LargeKernelConv(4, 2, bad)):
        with pytest.raises(ValueError, match="odd"):
            build()


def test_k_must_be_an_odd_int_and_the_error_names_the_key():
    for bad in (3.0, 4, 0):
        with pytest.raises(ConfigError) as info:
            GlobalConvolution(4, 2, bad)
        assert info.value.key == "k"


# Paper configuration: 2048 input channels (res-5), 21 VOC classes; Tables 2 and 4 count weights.
# The paper truncates some counts (GCN k=3: 260,694 -> "260K") and rounds others (trivial k=9:
# 3,483,648 -> "3484K"), so "to the thousand" means within 1,000 of the printed figure.
@pytest.mark.parametrize("k,gcn,conv", [(3, 260, 387), (5, 434, 1075), (7, 608, 2107), (9, 782, 3484)])
def test_table2_parameter_counts_at_paper_configuration(k, gcn, conv):
    assert abs(weight_count(GlobalConvolution(2048, 21, k)) - 1000 * gcn) < 1000
    assert abs(weight_count(LargeKernelConv(2048, 21, k)) - 1000 * conv) < 1000


@pytest.mark.parametrize("m,thousands", [(2048, 75885), (1024, 28505), (210, 4307)])
def test_table4_stack_width_counts_at_paper_configuration(m, thousands):
    assert abs(weight_count(StackedConv3x3(2048, 21, 7, m)) - 1000 * thousands) < 1000


def test_boundary_refinement_is_residual():
    br = BoundaryRefinement(5)
    x = torch.randn(2, 5, 8, 8)
    assert br(x).shape == x.shape
    for p in br.residual[-1].parameters():
        nn.init.zeros_(p)
    torch.testing.assert_close(br(x), x)
    assert n_params(br) == 2 * (5 * 5 * 9 + 5)


def test_registered_heads():
    assert {"pointwise", "gcn", "trivial", "stack3x3"} <= set(HEADS.names())
    assert HEADS.build("stack3x3", in_channels=6, num_classes=2, k=5)[0].out_channels == 6
    with pytest.raises(KeyError, match="known"):
        HEADS.build("nope", in_channels=1, num_classes=1)
