"""ResNet-GCN blocks and backbones (Table 6) and the full GCN + BR network (Fig. 2):
shapes, closed-form parameter counts, the 9 BRs, and no unintended weight sharing."""

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
from seg_core.complexity import count_parameters
from seg_core.models.gcn import BoundaryRefinement, GCNSegmenter, GlobalConvolution, ScoreUpsample


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
    assert [c[0].kernel_size for c in left] == [(3, 1), (1, 3)] and [c[0].kernel_size for c in right] == [(1, 3), (3, 1)]
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
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in MODELS.build(
        "gcn_br", num_classes=4, backbone="mini_resnet", upsample="bilinear").modules())


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
