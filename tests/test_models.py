"""Backbones and models: shapes, strides, forward/backward at tiny sizes; CUDA when present."""

import pytest
import torch

from seg_core import BACKBONES, MODELS
from seg_core.backbones import mini_resnet, receptive_field
from seg_core.complexity import count_macs, count_parameters


def test_mini_resnet_stages_and_geometry():
    net = mini_resnet()
    feats = net(torch.randn(2, 3, 64, 64))
    assert list(feats) == ["layer1", "layer2", "layer3"]
    assert feats["layer3"].shape == (2, 128, 16, 16)  # the paper's 16x16 top map
    assert net.output_stride == 4 and net.top == "layer3"
    assert receptive_field(net) == 25
    from torchvision.models.resnet import BasicBlock

    assert any(isinstance(m, BasicBlock) for m in net.modules())


def test_mini_resnet_rejects_bad_options():
    with pytest.raises(ValueError, match="output_stride"):
        mini_resnet(output_stride=8)
    with pytest.raises(ValueError, match="equal length"):
        mini_resnet(widths=(8, 16), blocks=(1,), strides=(1, 2))
    with pytest.raises(ValueError, match="pretrain"):
        mini_resnet(pretrained="IMAGENET1K_V1")


@pytest.mark.parametrize("stride,size", [(8, 8), (16, 4), (32, 2)])
def test_resnet50_output_stride(stride, size):
    net = BACKBONES.build("resnet50", output_stride=stride)
    feats = net(torch.randn(1, 3, 64, 64))
    assert feats["layer4"].shape == (1, 2048, size, size)
    assert net.out_channels == {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}


def test_basicblock_resnets_cannot_dilate_and_weights_are_checked():
    with pytest.raises(ValueError, match="BasicBlock"):
        BACKBONES.build("resnet18", output_stride=8)
    with pytest.raises(ValueError, match="unknown weights"):
        BACKBONES.build("resnet18", pretrained="NOPE")
    assert count_parameters(BACKBONES.build("resnet50")) == 23_508_032  # torchvision ResNet-50 minus fc


@pytest.mark.parametrize("head,extra", [("pointwise", {}), ("gcn", {"k": 5}), ("trivial", {"k": 3}),
                                        ("stack3x3", {"k": 5, "stack_width": 4})])
def test_single_head_forward_backward(head, extra):
    model = MODELS.build("single_head", num_classes=5, backbone="mini_resnet", head=head,
                         backbone_options={"stem_width": 8, "widths": [8, 8, 16]}, **extra)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert set(out) == {"out"} and out["out"].shape == (2, 5, 32, 32)
    out["out"].mean().backward()
    assert all(p.grad is not None for p in model.head.parameters())
    feats = model.backbone(x)
    torch.testing.assert_close(model.decode(feats, (32, 32))["out"], model(x)["out"])


def test_single_head_option_errors():
    with pytest.raises(ValueError, match="needs a kernel size"):
        MODELS.build("single_head", num_classes=2, backbone="mini_resnet", head="gcn")
    with pytest.raises(ValueError, match="stack_width"):
        MODELS.build("single_head", num_classes=2, backbone="mini_resnet", head="gcn", k=3, stack_width=4)


def test_macs_of_a_head_match_closed_form():
    model = MODELS.build("single_head", num_classes=5, backbone="mini_resnet", head="gcn", k=7)
    # GCN on a 16x16 map, 128 -> 5: every output pixel costs 2*k*5*(128+5) MACs
    assert count_macs(model.head, (1, 128, 16, 16)) == 16 * 16 * 2 * 7 * 5 * (128 + 5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_single_head_on_cuda():
    model = MODELS.build("single_head", num_classes=5, backbone="mini_resnet", head="gcn", k=15).cuda()
    out = model(torch.randn(2, 3, 64, 64, device="cuda"))["out"]
    assert out.shape == (2, 5, 64, 64) and out.is_cuda
