"""Backbones: geometry, strides and dilation (the atrous schedule, output strides, multi-grid),
option errors keyed by option; CUDA when present."""

import pytest
import torch

from seg_core import BACKBONES, MODELS
from seg_core.backbones import atrous_schedule, mini_resnet, receptive_field
from seg_core.complexity import count_parameters
from seg_core.registry import ConfigError


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


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_single_head_on_cuda():
    model = MODELS.build("single_head", num_classes=5, backbone="mini_resnet", head="gcn", k=15).cuda()
    out = model(torch.randn(2, 3, 64, 64, device="cuda"))["out"]
    assert out.shape == (2, 5, 64, 64) and out.is_cuda


@pytest.mark.parametrize(
    "output_stride,strides,dilations",
    [
        (None, [1, 2, 2, 2, 2], [1, 1, 1, 1, 1]),
        (8, [1, 2, 2, 2, 1], [1, 1, 1, 1, 2]),
        (4, [1, 2, 2, 1, 1], [1, 1, 1, 2, 4]),
        (1, [1, 1, 1, 1, 1], [1, 2, 4, 8, 16]),
    ],
)
def test_atrous_schedule_trades_stride_for_dilation(output_stride, strides, dilations):
    assert atrous_schedule([1, 2, 2, 2, 2], output_stride) == (strides, dilations)
    with pytest.raises(ConfigError, match="expected one of") as info:
        atrous_schedule([1, 2, 2], 3)
    assert info.value.key == "output_stride"


@pytest.mark.parametrize("output_stride,side", [(2, 32), (4, 16), (8, 8), (16, 4)])
def test_dilatable_mini_trunk_keeps_the_map_at_any_output_stride(output_stride, side):
    net = mini_resnet(
        block="bottleneck",
        widths=(16, 32, 64, 64),
        blocks=(1, 1, 1, 1),
        strides=(2, 2, 2, 2),
        output_stride=output_stride,
    )
    feats = net(torch.randn(1, 3, 64, 64))
    assert feats["layer4"].shape == (1, 64, side, side) and net.output_stride == output_stride
    rates = [m.conv2.dilation[0] for m in net.stages["layer4"]]
    assert rates == [max(1, 16 // output_stride)]  # the stride the stage skips, as dilation


def test_multi_grid_multiplies_the_last_stage_rates():
    net = mini_resnet(
        block="bottleneck",
        widths=(16, 32, 64),
        blocks=(1, 1, 3),
        strides=(2, 2, 2),
        output_stride=4,
        multi_grid=(1, 2, 4),
    )
    assert [b.conv2.dilation[0] for b in net.stages["layer3"]] == [2, 4, 8]  # stage rate 2 x (1, 2, 4)
    assert net(torch.randn(1, 3, 32, 32))["layer3"].shape[-2:] == (8, 8)
    for bad, key in (
        ({"multi_grid": (1, 2)}, "multi_grid"),
        ({"block": "basic", "multi_grid": (1, 2, 4)}, "multi_grid"),
        ({"block": "basic", "multi_grid": None}, "output_stride"),
    ):
        with pytest.raises(ConfigError) as info:
            mini_resnet(
                **{
                    "widths": (16, 32, 64),
                    "blocks": (1, 1, 3),
                    "strides": (2, 2, 2),
                    "output_stride": 4,
                    "block": "bottleneck",
                    "multi_grid": (1, 2, 4),
                    **bad,
                }
            )
        assert info.value.key == key
