"""DeepLab v3/v3+: the cascaded ResNet's output strides and multi-grid, ASPP with image pooling,
the v3+ decoder, evaluation at another output stride, and the torchvision cross-check. What every
model shares (shapes, contract, validation) is generated from the registry (test_registry_models)."""

import pytest
import torch
import torchvision

from seg_core.registry import MODELS, ConfigError

TINY_TRUNK = {"width": 0.0625, "units": [1, 1, 1, 3]}


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _deeper(**options):
    """A tiny v3 going deeper: the trunk and block5-7, no ASPP."""
    return MODELS.build("deeplab_v3", num_classes=5, backbone_options=TINY_TRUNK, extra_blocks=3, aspp=False, **options)


def test_every_output_stride_from_4_to_256_gives_its_map_on_the_same_weights():
    model = _deeper(output_stride=16).eval()
    count = _params(model)
    image = torch.randn(1, 3, 256, 256)
    for output_stride in (4, 8, 16, 32, 64, 128, 256):
        model.reconfigure(output_stride=output_stride)
        with torch.no_grad():
            x = model.extract(image)[model.backbone.top]
            for block in model.cascade:
                x = block(x)
        assert x.shape[-1] == 256 // output_stride, output_stride
        assert _params(model) == count
    with pytest.raises(ConfigError, match="output_stride"):
        model.reconfigure(output_stride=12)
    with pytest.raises(ConfigError, match="output_stride"):  # beyond 32 needs block5-7
        MODELS.build("deeplab_v3", num_classes=5, backbone_options=TINY_TRUNK, output_stride=64)


def test_block5_to_7_are_new_layers_outside_the_pretrained_trunk():
    plain = MODELS.build("deeplab_v3", num_classes=5, backbone_options=TINY_TRUNK, aspp=False)
    deeper = _deeper()
    assert plain.backbone.state_dict().keys() == deeper.backbone.state_dict().keys()  # one pretrained trunk fits both
    assert len(deeper.cascade) == 3 and set(deeper.parts()) == {"backbone", "head", "cascade"}


@pytest.mark.parametrize("grid", [(1, 1, 1), (1, 2, 1), (1, 2, 3), (1, 2, 4), (2, 2, 2)])
def test_multi_grid_multiplies_the_unit_rates_of_block4_and_after(grid):
    model = _deeper(output_stride=16, multi_grid=grid)
    stages = [model.backbone.stages[n] for n in model.backbone.stage_names] + list(model.cascade)
    rates = [[unit.conv2.dilation[0] for unit in stage] for stage in stages]
    assert rates[2] == [1]  # block3: no multi-grid; output stride 16 is reached there
    for index, base in ((3, 2), (4, 4), (5, 8), (6, 16)):  # block4 ... block7
        assert rates[index] == [base * g for g in grid], index  # v3 Sec. 3.2: (1, 2, 4) at OS 16 -> 2, 4, 8
    assert all(unit.conv2.padding == unit.conv2.dilation for stage in stages for unit in stage)


def test_image_pooling_works_at_batch_one_in_evaluation():
    model = MODELS.build("deeplab_v3", num_classes=5, backbone_options={"width": 0.0625, "units": [1, 1, 1, 3]},
                         aspp_rates=[1, 2], width=8).eval()  # fmt: skip
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))["out"]
    assert out.shape == (1, 5, 64, 64) and torch.isfinite(out).all()


def test_evaluating_at_another_output_stride_scales_trunk_and_aspp_rates():
    model = MODELS.build("deeplab_v3", num_classes=5, backbone_options={"width": 0.0625}, output_stride=16,
                         aspp_rates=[6, 12, 18], width=8)  # fmt: skip
    assert [c.dilation[0] for c in model.aspp.atrous_convs()] == [6, 12, 18]
    model.reconfigure(output_stride=8)  # the papers double the rates at 8 for a model trained at 16
    assert [c.dilation[0] for c in model.aspp.atrous_convs()] == [12, 24, 36]
    assert model.backbone.output_stride == 8 and model.describe()["eval_output_stride"] == 8
    assert model.describe()["eval_aspp_rates"] == [12, 24, 36] and model.describe()["aspp_rates"] == [6, 12, 18]
    model.reconfigure(output_stride=32)
    assert [c.dilation[0] for c in model.aspp.atrous_convs()] == [3, 6, 9]
    with pytest.raises(ConfigError, match="multi_grid"):
        model.reconfigure(multi_grid=[1, 2, 4])


MINI_SIDE, PAPER_SIDE = 128, 513  # deeplab-train-eval-os: 128 px images, the paper's 513 px crops


def _built_at(output_stride: int) -> dict:
    """The spec's model options for a model built (and trained) at ``output_stride``."""
    return {
        "output_stride": output_stride,
        "aspp_rates": [r * 16 // output_stride for r in (6, 12, 18)],
        "feature_map": MINI_SIDE // output_stride,
        "paper_feature_map": (PAPER_SIDE - 1) // output_stride + 1,
    }


@pytest.mark.parametrize("train", [8, 16, 32])
@pytest.mark.parametrize("evaluate", [8, 16, 32])
def test_evaluated_aspp_rates_equal_those_of_a_model_built_at_the_evaluation_stride(train, evaluate):
    """Rates are derived from the paper's unrounded rates at the evaluation stride, never by
    rescaling already-rounded ones (16 -> 8 once gave 2/6/8 where a model built at 8 has 3/6/9)."""
    options = {"backbone_options": {"width": 0.0625, "units": [1, 1, 1, 1]}, "width": 8, "multi_grid": [1, 2, 4]}
    with torch.device("meta"):
        trained = MODELS.build("deeplab_v3", num_classes=5, **options, **_built_at(train))
        built = MODELS.build("deeplab_v3", num_classes=5, **options, **_built_at(evaluate))
    trained.reconfigure(output_stride=evaluate)
    rates = [c.dilation[0] for c in trained.aspp.atrous_convs()]
    assert rates == [c.dilation[0] for c in built.aspp.atrous_convs()] == built.describe()["aspp_rates"]
    assert trained.describe()["eval_aspp_rates"] == rates
    trunk = lambda m: [(c.stride, c.dilation) for c in m.backbone.modules() if isinstance(c, torch.nn.Conv2d)]  # noqa: E731
    assert trunk(trained) == trunk(built)


def test_block5_to_7_have_identity_shortcuts_as_tf_slims_equal_depth_units():
    """A copy of block4 keeps its depth, so its first unit's shortcut only subsamples (no 1x1
    projection, no weights) and is the identity where the stride became dilation."""
    from seg_core.backbones.cascaded import Subsample

    for output_stride in (16, 256):
        model = MODELS.build("deeplab_v3", num_classes=5, backbone_options=TINY_TRUNK, extra_blocks=3,
                             output_stride=output_stride, aspp=False)  # fmt: skip
        for block in model.cascade:
            first, *rest = list(block)
            assert isinstance(first.downsample, Subsample) and not list(first.downsample.parameters())
            assert first.downsample.stride == first.conv2.stride[0]
            assert all(unit.downsample is None for unit in rest)
        strides = [block[0].downsample.stride for block in model.cascade]
        assert strides == ([1, 1, 1] if output_stride == 16 else [2, 2, 2])
        with torch.no_grad():
            assert model.eval()(torch.randn(1, 3, 64, 64))["out"].shape == (1, 5, 64, 64)
    assert isinstance(model.backbone.stages["block1"][0].downsample, torch.nn.Sequential)  # 64 -> 256: projected
    unit = model.cascade[0][0]
    x = torch.randn(1, unit.conv1.in_channels, 8, 8)
    assert torch.equal(Subsample(1)(x), x) and Subsample(2)(x).shape[-2:] == (4, 4)


def test_the_decoder_reads_the_stride_4_feature_and_changes_only_its_part():
    common = {
        "num_classes": 5,
        "backbone_options": {"width": 0.0625, "units": [1, 1, 1, 3]},
        "aspp_rates": [1, 2],
        "width": 8,
    }
    plain = MODELS.build("deeplab_v3", **common)
    v3plus = MODELS.build("deeplab_v3", decoder=True, low_level_channels=4, decoder_width=8, **common)
    assert v3plus.decoder_inputs == ("block4", "block1") and set(v3plus.parts()) == {"backbone", "head", "decoder"}
    assert _params(v3plus.backbone) == _params(plain.backbone)
    # 1x1 reduce (16 -> 4, BN) + two 3x3 convs (8 + 4 -> 8, 8 -> 8, BN); the classifier is the head's
    expected = (16 * 4 + 2 * 4) + (12 * 8 * 9 + 2 * 8) + (8 * 8 * 9 + 2 * 8)
    assert _params(v3plus.decoder) == expected
    assert v3plus(torch.randn(2, 3, 64, 64))["out"].shape == (2, 5, 64, 64)


def test_closest_configuration_to_torchvision_deeplabv3_resnet50_has_exactly_its_parameters():
    """torchvision's DeepLabHead is ASPP (1x1, 3x3 at 12/24/36, image pooling, 256 ch, project,
    dropout 0.5) + one 3x3 256 conv + BN + ReLU + 1x1 classifier on ResNet-50 at output stride 8:
    ours with ``refine_convs = 1`` (the papers have none). The trunks differ only in dilation
    (torchvision runs the first unit of a dilated stage at the previous rate), never in weights."""
    with torch.device("meta"):
        ours = MODELS.build("deeplab_v3", num_classes=21, backbone_options={"depth": 50, "output_stride": 8},
                            aspp_rates=[12, 24, 36], refine_convs=1)  # fmt: skip
        theirs = torchvision.models.segmentation.deeplabv3_resnet50(
            weights=None, weights_backbone=None, num_classes=21, aux_loss=False
        )
    assert _params(ours.backbone) == _params(theirs.backbone) == 23_508_032
    assert _params(ours) - _params(ours.backbone) == _params(theirs.classifier) == 16_130_837
    assert _params(ours) == _params(theirs) == 39_638_869
    with torch.device("meta"):  # the peer as a registered model (benchmarks) keeps torchvision's modules
        assert _params(MODELS.build("torchvision_deeplabv3", num_classes=21)) == 39_638_869


V3PLUS_TABLE3 = [  # (train OS, eval OS, decoder): our MACs at 513x513 (B) | the paper's
    ((16, 16, False), 71.06, 81.02),
    ((16, 8, False), 246.18, 276.18),
    ((16, 16, True), 92.82, 101.28),
    ((16, 8, True), 267.92, 297.92),
    ((32, 32, False), 47.52, 52.43),
    ((32, 32, True), 69.28, 74.20),
]


@pytest.mark.slow
@pytest.mark.parametrize(("config", "ours", "paper"), V3PLUS_TABLE3, ids=[str(r[0]) for r in V3PLUS_TABLE3])
def test_v3plus_table3_multiply_adds_at_the_paper_configuration(config, ours, paper):
    """ResNet-101, ASPP 6/12/18 at the training output stride (doubled at 8), image pooling,
    513x513, counted on the meta device (seg_core.complexity: every conv and linear layer's
    multiply-accumulates). Pinned: ours are 7-12% below the paper's, and the layer-by-layer
    count below (:func:`_resnet101_v3_macs`, torchvision's conventions) gives exactly ours, which
    is what lets it explain the gap (next test)."""
    from seg_core.complexity import model_complexity

    train_os, eval_os, decoder = config
    with torch.device("meta"):
        model = MODELS.build("deeplab_v3", num_classes=21, backbone_options={"depth": 101, "output_stride": train_os},
                             aspp_rates=[6, 12, 18], decoder=decoder)  # fmt: skip
    model.reconfigure(output_stride=eval_os)
    macs = model_complexity(model.eval(), (1, 3, 513, 513))["total"]["macs"] / 1e9
    assert macs == pytest.approx(ours, abs=0.01)
    assert macs == pytest.approx(_resnet101_v3_macs(eval_os, decoder) / 1e9, abs=0.01)
    assert 0.85 < macs / paper < 0.95


def _out(h: int, stride: int) -> int:
    return -(-h // stride)  # "same" padding


def _dilated_positions(h: int, rate: int, space_to_batch: bool) -> int:
    """Output positions a 3x3 convolution at ``rate`` computes on an h x h map. TensorFlow 1.x
    runs a dilated convolution as space_to_batch -> plain convolution -> batch_to_space: the map
    is padded by the kernel's reach and rounded up to a multiple of the rate, and a profiler
    counts the convolution on the whole padded, batch-expanded map."""
    if rate == 1 or not space_to_batch:
        return h * h
    padded = -(-(h + 2 * rate) // rate) * rate
    return rate * rate * (padded // rate - 2) ** 2


def _resnet101_v3_macs(
    output_stride: int, decoder: bool, *, tf_slim: bool = False, deep_stem: bool = False, space_to_batch: bool = False
) -> int:
    """DeepLab v3(+) on ResNet-101 at 513x513, 21 classes, multi-grid (1, 2, 4), ASPP rates
    6/12/18 scaled by 16 / output stride, image pooling, multiply-adds of every convolution,
    layer by layer. By default torchvision's ResNet (a block's stride on its first unit, the 7x7
    stem), as ours. ``tf_slim``: DeepLab's reference TF-slim ResNet (each block's stride on its
    *last* unit, whose shortcut subsamples without a convolution; a dropped stride leaves that
    unit at the old rate); ``deep_stem``: its 'beta' root of three 3x3 convolutions (64, 64,
    128); ``space_to_batch``: dilated convolutions counted as TensorFlow computes them."""
    h, macs = _out(513, 2), 0
    macs += h * h * (9 * (3 * 64 + 64 * 64 + 64 * 128) if deep_stem else 49 * 3 * 64)
    cin, h, stride, rate = (128 if deep_stem else 64), _out(h, 2), 4, 1
    strides = (2, 2, 2, 1) if tf_slim else (1, 2, 2, 2)
    for block, (planes, units) in enumerate(((64, 3), (128, 4), (256, 23), (512, 3))):
        for u in range(units):
            s = strides[block] if u == (units - 1 if tf_slim else 0) else 1
            dropped = s > 1 and stride >= output_stride  # the stride becomes dilation
            if dropped:
                s = 1
                if not tf_slim:  # ours: the new rate from this unit on (every unit of the block)
                    rate *= strides[block]
            unit_rate = rate * ((1, 2, 4)[u] if block == 3 else 1)
            h_out = _out(h, s)
            macs += h * h * cin * planes + h_out * h_out * 4 * planes * planes
            macs += _dilated_positions(h_out, unit_rate, space_to_batch) * 9 * planes * planes
            if cin != 4 * planes or (s > 1 and not tf_slim):
                macs += h_out * h_out * cin * 4 * planes  # projection shortcut
            if dropped and tf_slim:  # TF-slim: the unit keeps the old rate, the next ones double it
                rate *= strides[block]
            cin, h, stride = 4 * planes, h_out, stride * s
    aspp = [r * 16 // output_stride for r in (6, 12, 18)]
    macs += h * h * 2048 * 256 + 2048 * 256 + h * h * 5 * 256 * 256  # 1x1, image pooling, projection
    macs += sum(_dilated_positions(h, r, space_to_batch) for r in aspp) * 9 * 2048 * 256
    if not decoder:
        return macs + h * h * 256 * 21
    # the decoder reads the stride-4 map (129 x 129) in both: TF-slim's block1/unit_2, before its stride
    return macs + 129 * 129 * (256 * 48 + 9 * 304 * 256 + 9 * 256 * 256 + 256 * 21)


@pytest.mark.parametrize(("config", "ours", "paper"), V3PLUS_TABLE3, ids=[str(r[0]) for r in V3PLUS_TABLE3])
def test_the_papers_multiply_adds_are_those_of_tf_slims_resnet_101_beta_counted_as_tensorflow_runs_it(
    config, ours, paper
):
    """Why the paper's counts are 7-12% above ours: its ResNet-101 is DeepLab's TF-slim
    resnet_v1_101_beta (the stride on each block's last unit, the three-3x3 stem) and TensorFlow
    computes a dilated convolution on a padded, batch-expanded map (space_to_batch). With both,
    five of the six rows agree to 0.35%. The sixth, 16/16 with the decoder, comes out 1.3% above
    the paper's: the paper's own rows put the decoder at 21.74B (output stride 8) and 21.77B (32)
    but 20.26B at 16, though it runs at stride 4 in all three; we do not fit that row."""
    _, eval_os, decoder = config
    tf = _resnet101_v3_macs(eval_os, decoder, tf_slim=True, deep_stem=True, space_to_batch=True) / 1e9
    if config == (16, 16, True):
        assert tf / paper == pytest.approx(1.013, abs=0.002)
        return
    assert abs(tf / paper - 1) < 0.0035
    # neither difference alone explains it: each alone stays at least 4x farther from the paper
    for partial in ({"tf_slim": True, "deep_stem": True}, {"space_to_batch": True}):
        alone = _resnet101_v3_macs(eval_os, decoder, **partial) / 1e9
        assert abs(alone / paper - 1) > 4 * abs(tf / paper - 1)


def test_the_share_of_valid_taps_falls_to_the_centre_tap_as_the_rate_reaches_the_map():
    from seg_core.models.deeplab_v3 import valid_tap_fraction

    assert valid_tap_fraction(1, 2) == pytest.approx(4 / 9)  # on a 2x2 map each cell sees 2 of 3 taps per axis
    assert valid_tap_fraction(33, 33) == valid_tap_fraction(40, 33) == pytest.approx(1 / 9)  # the centre alone
    shares = [valid_tap_fraction(r, 33) for r in (6, 12, 18, 24)]
    assert shares == sorted(shares, reverse=True) and shares[-1] < 0.3  # rate 24 on the paper's 33-cell map


def test_aspp_dropout_keeps_its_noise_per_unit_at_a_narrower_width():
    """0.1 after the 256-channel projection (DeepLab's TF code, keep_prob 0.9; the papers give no
    rate) is 1/73 at 32 channels (seg_core.models.deeplab.scaled_dropout), and the model records
    both, the reference value under a name that does not call it the paper's."""
    for width, expected in ((256, 0.1), (32, 1 / 73)):
        model = MODELS.build("deeplab_v3", num_classes=5, backbone_options=TINY_TRUNK, width=width)
        drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        assert len(drops) == 1 and drops[0].p == pytest.approx(expected)
        assert model.describe()["dropout_at_256"] == 0.1 and "paper_dropout" not in model.describe()
        assert model.describe()["dropout"] == pytest.approx(expected, abs=1e-6)
