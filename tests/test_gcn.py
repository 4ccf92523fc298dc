"""Large Kernel Matters (Peng et al. 2017): what is specific to the paper. The Fig. 4 heads and
BR (shapes, closed-form parameter counts, Tables 2 and 4 at the paper's configuration), the
ResNet-GCN blocks and backbones (Table 6), and the full GCN + BR network (Fig. 2: the 9 BRs, no
unintended weight sharing). Generic model checks are generated in test_registry_models.py."""

import pytest
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from seg_core import BACKBONES, MODELS
from seg_core.backbones import (
    FactorizedLargeKernel,
    GCNBottleneck,
    gcn_block_weights,
    matched_mid_width,
    mini_resnet_gcn,
)
from seg_core.complexity import count_macs, count_parameters
from seg_core.layers import weight_count
from seg_core.models.gcn import (
    BoundaryRefinement,
    GCNSegmenter,
    GlobalConvolution,
    LargeKernelConv,
    PointwiseClassifier,
    ScoreUpsample,
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


def _gcn_block_params(c_in: int, mid: int, c_out: int, k: int, shortcut: bool) -> int:
    """Closed form: conv weights + BN (2 per channel) after each of the four 1-D convs and the projection."""
    n = gcn_block_weights(c_in, mid, c_out, k) + 4 * 2 * mid + 2 * c_out
    return n + (c_in * c_out + 2 * c_out if shortcut else 0)


def _assert_no_shared_parameters(model: nn.Module) -> None:
    """No parameter registered twice, no two parameters on one storage, and no module object
    reused in two places unless it holds no parameters (``[block] * n`` would fail here)."""
    with_dupes = list(model.named_parameters(remove_duplicate=False))
    assert len(with_dupes) == len(list(model.named_parameters())), "a parameter is registered twice"
    ptrs = [p.data_ptr() for _, p in with_dupes]
    assert len(ptrs) == len(set(ptrs)), "two parameters share storage"
    seen, repeated = {}, []
    for name, m in model.named_modules(remove_duplicate=False):
        if id(m) in seen and list(m.parameters()):
            repeated.append((seen[id(m)], name))
        seen.setdefault(id(m), name)
    assert not repeated, f"modules with parameters reused: {repeated}"


def test_the_sharing_check_catches_a_repeated_block():
    block = GCNBottleneck(8, 4, 8, k=3)
    with pytest.raises(AssertionError, match="registered twice"):
        _assert_no_shared_parameters(nn.Sequential(*[block] * 2))


@pytest.mark.parametrize("stride,c_in,c_out", [(1, 64, 64), (2, 32, 64), (1, 32, 64)])
def test_gcn_bottleneck_shapes_and_parameters(stride, c_in, c_out):
    block = GCNBottleneck(c_in, 12, c_out, k=5, stride=stride)
    y = block(torch.randn(2, c_in, 16, 16))
    assert y.shape == (2, c_out, 16 // stride, 16 // stride)
    assert (y >= 0).all()  # ReLU after the residual addition
    shortcut = stride != 1 or c_in != c_out
    assert isinstance(block.shortcut, nn.Sequential if shortcut else nn.Identity)
    assert count_parameters(block) == _gcn_block_params(c_in, 12, c_out, 5, shortcut)


def test_gcn_bottleneck_is_gcn_then_projection_then_residual_relu():
    block = GCNBottleneck(8, 4, 8, k=3).eval()
    x = torch.randn(1, 8, 6, 6)
    expected = torch.relu(block.project(block.gcn(x)) + x)
    assert torch.allclose(block(x), expected)
    left, right = block.gcn.left, block.gcn.right
    assert [c[0].kernel_size for c in left] == [(3, 1), (1, 3)] and [c[0].kernel_size for c in right] == [
        (1, 3),
        (3, 1),
    ]
    for conv_bn_relu in (*left, *right):  # BN + ReLU after every 1-D conv
        assert [type(m) for m in conv_bn_relu] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]


def test_strided_gcn_puts_the_stride_on_the_first_conv_of_each_branch():
    gcn = FactorizedLargeKernel(8, 4, 5, stride=2)
    assert gcn.left[0][0].stride == (2, 2) and gcn.left[1][0].stride == (1, 1)
    assert gcn.right[0][0].stride == (2, 2) and gcn.right[1][0].stride == (1, 1)


def test_resnet50_gcn_structure_and_parameter_count():
    plain = BACKBONES.build("resnet50")
    net = BACKBONES.build("resnet50_gcn")
    for name, blocks, mid, k in (("layer3", 6, 85, 5), ("layer4", 3, 128, 7)):
        stage = net.stages[name]
        assert len(stage) == blocks and all(isinstance(b, GCNBottleneck) for b in stage)
        assert {b.gcn.left[0][0].out_channels for b in stage} == {mid}
        assert {b.gcn.left[0][0].kernel_size for b in stage} == {(k, 1)}
    assert all(isinstance(b, Bottleneck) for b in net.stages["layer2"])  # res2/res3 stay plain
    # closed form: the plain ResNet-50 minus its res4/res5 plus the GCN stages
    gcn_params = sum(_gcn_block_params(512 if i == 0 else 1024, 85, 1024, 5, i == 0) for i in range(6))
    gcn_params += sum(_gcn_block_params(1024 if i == 0 else 2048, 128, 2048, 7, i == 0) for i in range(3))
    replaced = count_parameters(plain.stages["layer3"]) + count_parameters(plain.stages["layer4"])
    assert count_parameters(net) == count_parameters(plain) - replaced + gcn_params
    feats = net(torch.randn(1, 3, 64, 64))
    assert feats["layer3"].shape == (1, 1024, 4, 4) and feats["layer4"].shape == (1, 2048, 2, 2)
    _assert_no_shared_parameters(net)


def test_paper_mid_widths_follow_the_parameter_matching_rule():
    res4 = 1024 * 256 + 9 * 256 * 256 + 256 * 1024  # a ResNet-50 res4 bottleneck's convolutions
    res5 = 2048 * 512 + 9 * 512 * 512 + 512 * 2048
    assert 0.9 < gcn_block_weights(1024, 85, 1024, 5) / res4 < 1.0
    assert 0.9 < gcn_block_weights(2048, 128, 2048, 7) / res5 < 1.0
    assert gcn_block_weights(32, 57, 64, 5) <= 9 * 32 * 64 + 9 * 64 * 64 < gcn_block_weights(32, 58, 64, 5)
    assert matched_mid_width(32, 64, 5, 9 * 32 * 64 + 9 * 64 * 64) == 57


def test_mini_resnet_gcn_matches_the_plain_mini_resnet():
    plain, gcn = BACKBONES.build("mini_resnet"), mini_resnet_gcn()
    assert [type(b) for b in gcn.stages["layer1"]] == [type(b) for b in plain.stages["layer1"]]
    assert [b.gcn.left[0][0].out_channels for b in gcn.modules() if isinstance(b, GCNBottleneck)] == [57, 94]
    assert abs(count_parameters(gcn) - count_parameters(plain)) / count_parameters(plain) < 0.02
    x = torch.randn(2, 3, 64, 64)
    assert {k: v.shape for k, v in gcn(x).items()} == {k: v.shape for k, v in plain(x).items()}
    with pytest.raises(ValueError, match="gcn_mid"):
        mini_resnet_gcn(gcn_mid=(8,))
    _assert_no_shared_parameters(gcn)


def test_full_network_on_resnet_has_nine_distinct_boundary_refinements():
    model = MODELS.build("gcn_br", num_classes=21, backbone="resnet50", k=15)
    brs = model.boundary_refinements()
    assert len(brs) == 9 and len({id(b) for b in brs}) == 9
    assert len({b.residual[0].weight.data_ptr() for b in brs}) == 9
    assert sum(isinstance(m, GlobalConvolution) for m in model.modules()) == 4
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in model.modules()) == 5  # 3 fusions + 2 final x2 steps
    _assert_no_shared_parameters(model)
    # decoder parameters in closed form: 4 GCNs, 9 BRs, 5 deconvolutions (21 classes, k = 15)
    gcns = sum(2 * 15 * 21 * (c + 21) + 4 * 21 for c in (256, 512, 1024, 2048))
    brs_params = 9 * 2 * (9 * 21 * 21 + 21)
    deconvs = 5 * 21 * 21 * 16
    assert count_parameters(model) - count_parameters(model.backbone) == gcns + brs_params + deconvs
    with torch.no_grad():  # updating one BR leaves the others unchanged
        before = brs[1].residual[0].weight.clone()
        brs[0].residual[0].weight.add_(1.0)
        assert torch.equal(brs[1].residual[0].weight, before)


@pytest.mark.parametrize("size", [(64, 64), (70, 97)])
@pytest.mark.parametrize("upsample", ["deconv", "bilinear"])
def test_full_network_output_size_on_resnet(size, upsample):
    model = MODELS.build("gcn_br", num_classes=3, backbone="resnet18", k=3, upsample=upsample).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size))["out"].shape == (1, 3, *size)


def test_full_network_variants_on_the_mini_backbone_train():
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    for kwargs, n_br in (({}, 5), ({"refine": False}, 0), ({"stage_head": "pointwise", "refine": False}, 0)):
        model = MODELS.build("gcn_br", num_classes=4, backbone="mini_resnet", k=5, **kwargs)
        assert isinstance(model, GCNSegmenter) and len(model.boundary_refinements()) == n_br
        assert model.decoder_inputs == ("layer1", "layer2", "layer3")
        out = model(x)["out"]
        assert out.shape == (2, 4, 32, 32)
        torch.nn.functional.cross_entropy(out, y).backward()
        assert all(p.grad is not None for p in model.decoder_parameters())
        backbone = {id(p) for p in model.backbone.parameters()}
        assert not backbone & {id(p) for p in model.decoder_parameters()}
    assert not any(
        isinstance(m, nn.ConvTranspose2d)
        for m in MODELS.build("gcn_br", num_classes=4, backbone="mini_resnet", upsample="bilinear").modules()
    )


def test_deconvolution_starts_as_bilinear_upsampling():
    up = ScoreUpsample(3, "deconv")
    x = torch.randn(1, 3, 8, 8)
    ref = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(up(x, (16, 16))[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-6)
        assert up(x, (15, 17)).shape[-2:] == (15, 17)
    with pytest.raises(ValueError, match="upsample"):
        ScoreUpsample(3, "nearest")


def test_gcn_br_head_is_gcn_then_br():
    from seg_core.registry import HEADS

    head = HEADS.build("gcn_br", in_channels=16, num_classes=5, k=7)
    assert isinstance(head[0], GlobalConvolution) and isinstance(head[1], BoundaryRefinement)
    assert head(torch.randn(1, 16, 9, 9)).shape == (1, 5, 9, 9)


def test_single_head_option_errors():
    with pytest.raises(ValueError, match="needs a kernel size"):
        MODELS.build("single_head", num_classes=2, backbone="mini_resnet", head="gcn")
    with pytest.raises(ValueError, match="stack_width"):
        MODELS.build("single_head", num_classes=2, backbone="mini_resnet", head="gcn", k=3, stack_width=4)


def test_macs_of_a_head_match_closed_form():
    model = MODELS.build("single_head", num_classes=5, backbone="mini_resnet", head="gcn", k=7)
    # GCN on a 16x16 map, 128 -> 5: every output pixel costs 2*k*5*(128+5) MACs
    assert count_macs(model.head, (1, 128, 16, 16)) == 16 * 16 * 2 * 7 * 5 * (128 + 5)
