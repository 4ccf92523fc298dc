"""DeepLab v1/v2: what is specific to the papers. The field-of-view heads, LargeFOV and ASPP in
closed form at the mini width, v2 Table 1's parameter counts at the paper's configuration, the
rate rule for other map sizes, and the atrous VGG-16 at every output stride."""

from pathlib import Path

import pytest
import torch
import torchvision
from conftest import needs_crf
from torch import nn

from seg_core.backbones import BACKBONES
from seg_core.complexity import count_parameters
from seg_core.models.deeplab import SummedASPP, scaled_dropout, scaled_rate
from seg_core.registry import MODELS, ConfigError

TINY = {"backbone": "mini_resnet", "backbone_options": {"stem_width": 8, "widths": [8, 16, 32]}}


def _fov(k, w, cin, c):
    return (k * k * cin * w + w) + (w * w + w) + (w * c + c)


@pytest.mark.parametrize(
    "rates,kernel,width", [([12], 3, 1024), ([4], 7, 4096), ([4], 4, 4096), ([2, 4, 8, 12], 3, 1024)]
)
def test_head_counts_in_closed_form_at_the_mini_width(rates, kernel, width):
    model = MODELS.build(
        "deeplab_v2",
        num_classes=5,
        rates=rates,
        kernel=kernel,
        width=width,
        width_scale=1 / 128,
        feature_map=16,
        **TINY,
    )
    w = round(width / 128)
    assert count_parameters(model.head) == len(rates) * _fov(kernel, w, 32, 5)
    direct = MODELS.build("deeplab_v2", num_classes=5, rates=rates, branch="direct", **TINY)
    assert count_parameters(direct.head) == len(rates) * (9 * 32 * 5 + 5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "rates,kernel,width,paper",
    [([4], 7, 4096, 134.3), ([4], 4, 4096, 65.1), ([8], 4, 4096, 65.1), ([12], 3, 1024, 20.5)],
)
def test_table1_parameters_at_the_paper_configuration(rates, kernel, width, paper):
    """VGG-16 (atrous) with fc6 k x k / rate / width, fc7, fc8 for 21 classes: v2 Table 1's counts."""
    with torch.device("meta"):
        model = MODELS.build(
            "deeplab_v2", num_classes=21, backbone="vgg16_atrous", rates=rates, kernel=kernel, width=width
        )
    assert round(count_parameters(model) / 1e6, 1) == paper
    assert count_parameters(model.backbone) == count_parameters(torchvision.models.vgg16().features)  # 14.71M
    assert count_parameters(model.head) == _fov(kernel, width, 512, 21)


def test_aspp_sums_its_branches():
    model = MODELS.build("deeplab_v2", num_classes=3, rates=[1, 2, 3], width=8, **TINY).eval()
    assert isinstance(model.head, SummedASPP) and len(model.head.branches) == 3
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(model.head(x), sum(b(x) for b in model.head.branches))
    dilations = [b[0].dilation[0] for b in model.head.branches]
    assert dilations == [1, 2, 3]


def test_the_rate_rule_keeps_rate_relative_to_the_map():
    assert [scaled_rate(r, 16, 41) for r in (2, 4, 8, 12)] == [1, 2, 3, 5]  # ASPP-S
    assert [scaled_rate(r, 16, 41) for r in (6, 12, 18, 24)] == [2, 5, 7, 9]  # ASPP-L
    assert [scaled_rate(r, 16, 41, kernel=4) for r in (4, 8)] == [2, 4]  # even kernels: even rates, still centred
    assert scaled_rate(12, None) == 12 and scaled_rate(12, 41) == 12  # the paper's own map
    model = MODELS.build(
        "deeplab_v2", num_classes=5, rates=[6, 12, 18, 24], feature_map=16, width=1024, width_scale=1 / 128, **TINY
    )
    info = model.describe()
    assert info["paper_rates"] == [6, 12, 18, 24] and info["rates"] == [2, 5, 7, 9] and info["width"] == 8


@pytest.mark.slow
@pytest.mark.parametrize(
    "output_stride,side,dilations", [(8, 9, [1, 1, 1, 2, 4]), (16, 5, [1, 1, 1, 1, 2]), (32, 3, [1, 1, 1, 1, 1])]
)
def test_atrous_vgg16_at_every_output_stride(output_stride, side, dilations):
    net = BACKBONES.build("vgg16_atrous", output_stride=output_stride)
    assert net(torch.randn(1, 3, 64, 64))["conv5"].shape == (1, 512, side, side)
    assert list(net.dilations.values()) == dilations and net.output_stride == output_stride
    conv5 = [m for m in net.stages["conv5"] if isinstance(m, nn.Conv2d)]
    assert all(c.dilation[0] == dilations[3] for c in conv5)  # conv5 runs at the rate pool4 skipped


@pytest.mark.parametrize("side,cells", [(321, 41), (513, 65)])
def test_atrous_vgg16_has_deeplabs_caffe_pools(side, cells):
    """3x3 stride-2 pools with padding 1 in ceil mode: 41 cells at 321 px (the paper's fc6 map,
    PAPER_FEATURE_MAP) and 65 at 513 px, where VGG's 2x2 pools give 40 and 64."""
    from seg_core.models.deeplab import PAPER_FEATURE_MAP

    with torch.device("meta"):
        net = BACKBONES.build("vgg16_atrous", output_stride=8)
        assert net(torch.empty(1, 3, side, side))["conv5"].shape[-2:] == (cells, cells)
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.ceil_mode) for p in pools[:3]] == [(3, 2, True)] * 3
    assert PAPER_FEATURE_MAP == 41


def test_deeplab_v2s_resnet_101_runs_every_unit_of_res4_at_2_and_of_res5_at_4():
    """DeepLab's convention (cascaded_resnet), not torchvision's (first unit at the previous rate)."""
    with torch.device("meta"):
        ours = BACKBONES.build("cascaded_resnet", depth=101, output_stride=8)
        theirs = BACKBONES.build("resnet101", output_stride=8)
    rates = lambda stage: [unit.conv2.dilation[0] for unit in stage]  # noqa: E731
    assert rates(ours.stages["block3"]) == [2] * 23 and rates(ours.stages["block4"]) == [4] * 3
    assert rates(theirs.stages["layer3"]) == [1] + [2] * 22 and rates(theirs.stages["layer4"]) == [2, 4, 4]
    assert ours.output_stride == theirs.output_stride == 8


def test_deeplab_option_errors_name_the_option():
    for bad, key in (
        ({"rates": []}, "rates"),
        ({"rates": [3], "kernel": 4, "width": 8}, "kernel"),
        ({"branch": "deep"}, "branch"),
        ({"width_scale": 2.0}, "width_scale"),
        ({"rates": [2, 4], "kernel": 5}, "kernel"),
    ):
        with pytest.raises(ConfigError) as info:
            MODELS.build("deeplab_v2", num_classes=3, **{**TINY, **bad})
        assert info.value.key == key


def test_dropout_keeps_the_papers_noise_per_unit_at_another_width():
    """fc6/fc7 dropout is element-wise (Caffe's Dropout) at the rate whose noise on a unit's
    sum, p / ((1 - p) n), is the paper's: 0.5 at full width, 1/129 at 1/128 of it."""
    assert scaled_dropout(0.5, 1.0) == pytest.approx(0.5)
    assert scaled_dropout(0.5, 1 / 128) == pytest.approx(1 / 129)
    assert scaled_dropout(0.0, 1 / 128) == 0.0
    for p, scale in ((0.5, 1 / 128), (0.3, 0.25)):
        q = scaled_dropout(p, scale)
        assert q / ((1 - q) * 4096 * scale) == pytest.approx(p / ((1 - p) * 4096))
    model = MODELS.build(
        "deeplab_v2", num_classes=5, backbone="mini_resnet", rates=[12], width=1024, width_scale=1 / 128
    )
    drops = [m for m in model.head.modules() if isinstance(m, nn.Dropout | nn.Dropout2d)]
    assert len(drops) == 2 and all(type(m) is nn.Dropout and m.p == pytest.approx(1 / 129) for m in drops)
    assert model.describe()["paper_dropout"] == 0.5
    assert model.describe()["dropout"] == pytest.approx(1 / 129, abs=1e-6)


@needs_crf
@pytest.mark.slow
def test_every_paper_scale_deeplab_v1_v2_table_builds_its_trunk_at_output_stride_8():
    """DeepLab v1/v2 run their heads at output stride 8 (v2 Sec. 3.1). The builder takes the trunk
    as configured (the mini scale's trunk is at 4: its rates follow the map's side, 16 cells, not
    the stride), so every paper-scale spec sets 8, and this test checks each one's built trunk."""
    from ablations.schema import load_specs
    from ablations.sweep import expand
    from ablations.validate import build_on_meta

    specs, errors = load_specs(Path(__file__).resolve().parent.parent / "ablations" / "specs")
    assert not errors
    checked = 0
    for spec in specs:
        if spec.kind != "ablation" or "paper" not in spec.scales:
            continue
        for run in expand(spec, "paper", results_dir=Path("/nonexistent")):
            model = run["config"]["model"]
            if model["name"] == "deeplab_v2":
                assert build_on_meta(model, 21).backbone.output_stride == 8, (spec.id, run["variant"])
                checked += 1
    assert checked >= 9  # deeplab-fov, deeplab-aspp and deeplab-crf's variants
