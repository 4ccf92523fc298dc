"""PSPNet-50 and ICNet: shapes of every variant, cascade label guidance only in training,
nearest label downsampling, and PSPNet-50's parameter count against torchvision's ResNet-50."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet50

from seg_core import MODELS
from seg_core.backbones import dilated_resnet50
from seg_core.complexity import count_parameters
from seg_core.data.synthetic import ShapesConfig, SyntheticShapes
from seg_core.losses import IGNORE_INDEX, CompositeLoss, downsample_labels
from seg_core.metrics import SegmentationEvaluator
from seg_core.models.icnet import CascadeFeatureFusion, ICNet, PSPNet, PyramidPooling
from seg_core.registry import ConfigError

CLG = {
    "sub124": {"type": "cross_entropy", "output": "sub124", "weight": 1.0},
    "sub24": {"type": "cross_entropy", "output": "sub24", "weight": 0.4},
    "sub4": {"type": "cross_entropy", "output": "sub4", "weight": 0.4},
}


def test_dilated_resnet50_parameters_match_torchvision_plus_the_deep_stem():
    ours = count_parameters(dilated_resnet50())
    tv = resnet50()
    stages = sum(count_parameters(getattr(tv, f"layer{i}")) for i in range(1, 5))
    deep_stem = 9 * (3 * 64 + 64 * 64 + 64 * 128) + 2 * (64 + 64 + 128)  # three 3x3 convs + BN
    wider_res2_input = (128 - 64) * 64 + (128 - 64) * 256  # res2's first 1x1 and shortcut read 128 channels, not 64
    assert ours == stages + deep_stem + wider_res2_input


def test_pspnet50_parameter_count_in_closed_form():
    model = PSPNet(19)
    backbone = count_parameters(model.backbone)
    psp = 4 * (2048 * 512 + 2 * 512)
    head = 9 * 4096 * 512 + 2 * 512 + 512 * 19 + 19
    assert count_parameters(model) == backbone + psp + head
    assert count_parameters(PSPNet(19, width=0.5)) < count_parameters(model) / 3.5  # half channels: ~1/4 of the weights


@pytest.mark.parametrize("output_stride,size", [(8, 8), (16, 4), (32, 2)])
def test_pspnet_output_stride_and_stages(output_stride, size):
    model = PSPNet(5, width=0.25, output_stride=output_stride).eval()
    feats = model.backbone(torch.randn(1, 3, 64, 64))
    assert feats["layer4"].shape[-2:] == (size, size)
    assert model.backbone.output_stride == output_stride
    assert [name for name, _ in model.stages()] == ["stem", "res2", "res3", "res4", "res5", "psp", "head"]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96))["out"].shape == (1, 5, 64, 96)


def test_pyramid_pooling_modes():
    x = torch.randn(1, 8, 12, 12)
    concat, summed = PyramidPooling(8, mode="concat").eval(), PyramidPooling(8, mode="sum")
    assert concat(x).shape == (1, 16, 12, 12) and concat.out_channels == 16
    assert summed(x).shape == x.shape and not list(summed.parameters())
    constant = torch.ones(1, 2, 6, 6)
    assert torch.allclose(summed(constant), 5 * constant)  # input + 4 pooled levels of a constant map
    with pytest.raises(ValueError, match="mode"):
        PyramidPooling(8, mode="max")


@pytest.mark.parametrize(
    "branches,aux",
    [("sub4", {"sub4": 32}), ("sub24", {"sub4": 16, "sub24": 8}), ("sub124", {"sub4": 16, "sub24": 8, "sub124": 4})],
)
def test_icnet_variant_outputs(branches, aux):
    model = MODELS.build("icnet", num_classes=3, branches=branches, backbone_options={"width": 0.25})
    x = torch.randn(2, 3, 64, 128)
    out = model.train()(x)
    assert out["out"].shape == (2, 3, 64, 128)
    assert {k: (64 // v.shape[-2], 128 // v.shape[-1]) for k, v in out.items() if k != "out"} == {
        k: (s, s) for k, s in aux.items()
    }
    with torch.no_grad():
        assert set(model.eval()(x)) == {"out"}  # cascade outputs exist only in training


def test_icnet_structure_shares_sub2_and_sub4_computation():
    model = ICNet(3, width=0.5)
    assert model.conv3_1 is model.backbone.stages["layer2"][0]
    assert len(model.res3_rest) == 3
    assert model.sub1 is not None and model.cff_124 is not None
    assert ICNet(3, branches="sub4").cff_24 is None and ICNet(3, branches="sub24").sub1 is None
    assert model.backbone.out_channels == {"layer1": 128, "layer2": 256, "layer3": 512, "layer4": 1024}  # half width


@pytest.mark.parametrize("fusion,kernel,dilation", [("cff", 3, 2), ("dc3", 3, 1), ("dc5", 5, 1), ("dc7", 7, 1)])
def test_cascade_feature_fusion(fusion, kernel, dilation):
    unit = CascadeFeatureFusion(16, 8, 12, 4, fusion)
    conv = unit.low[0]
    assert conv.kernel_size == (kernel, kernel) and conv.dilation == (dilation, dilation)
    fused, aux = unit.train()(torch.randn(2, 16, 5, 7), torch.randn(2, 8, 10, 14))
    assert fused.shape == (2, 12, 10, 14) and (fused >= 0).all() and aux.shape == (2, 4, 10, 14)
    assert unit.eval()(torch.randn(1, 16, 5, 7), torch.randn(1, 8, 10, 14))[1] is None
    with pytest.raises(ValueError, match="fusion"):
        CascadeFeatureFusion(16, 8, 12, 4, "deconv")


def test_label_downsampling_keeps_real_labels_and_the_ignore_index_only_where_it_dominates():
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[:, :, 4:] = 2
    label[:, ::2, ::2] = IGNORE_INDEX  # a quarter of every 2x2 cell is void: the class still wins
    small = downsample_labels(label, (4, 4))
    assert small.dtype == torch.long
    assert torch.equal(small, torch.tensor([[0, 0, 2, 2]] * 4)[None])
    label[:, :4, :4] = IGNORE_INDEX  # a fully void quadrant stays void
    assert (downsample_labels(label, (4, 4))[:, :2, :2] == IGNORE_INDEX).all()
    tie = torch.tensor([[[3, 1]]])  # a tie goes to the lower class id
    assert downsample_labels(tie, (1, 1)).item() == 1
    assert torch.equal(downsample_labels(label, (8, 8)), label)


def _upsampled_edge(small: torch.Tensor, size: int) -> torch.Tensor:
    """Column where the bilinearly upsampled one-hot prediction of ``small`` switches to class 1."""
    logits = F.one_hot(small, 2).permute(0, 3, 1, 2).float()
    pred = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False).argmax(1)
    return (pred[0, 0] == 0).sum()


@pytest.mark.parametrize("factor", [4, 8, 16])
def test_downsampled_labels_and_upsampled_logits_agree_in_position(factor):
    """A predictor perfect on the low-resolution targets, upsampled as evaluation does (bilinear,
    align_corners=False), puts a straight edge within half a cell of the true edge, with no bias
    over the edge positions; top-left sampling (plain ``nearest``) is biased by (s - 1) / 2 px."""
    size = 8 * factor
    errors, nearest_errors = [], []
    for edge in range(2 * factor, 6 * factor):  # every offset of the edge within a cell
        label = torch.zeros(1, size, size, dtype=torch.long)
        label[..., edge:] = 1
        small = downsample_labels(label, (8, 8))
        errors.append(int(_upsampled_edge(small, size)) - edge)
        top_left = F.interpolate(label[:, None].float(), size=(8, 8), mode="nearest")[:, 0].long()
        nearest_errors.append(int(_upsampled_edge(top_left, size)) - edge)
    assert max(abs(e) for e in errors) <= factor / 2
    assert abs(sum(errors) / len(errors)) <= 0.5  # unbiased
    assert sum(nearest_errors) / len(nearest_errors) == pytest.approx((factor - 1) / 2, abs=0.5)


@pytest.mark.slow
def test_a_perfect_low_resolution_predictor_scores_near_the_best_possible():
    """On the icnet specs' scenes, one-hot logits of the 1/8 targets upsampled to full size score
    within 1 mIoU point of a perfect 1/8 predictor of cell centres (the bound cell-centre sampling
    reaches), and far above top-left sampling."""
    icnet_scenes = ShapesConfig(size=128, radius_min=10.0, radius_max=56.0, period_min=6.0, period_max=16.0)
    labels = SyntheticShapes(split="val", num_images=64, seed=0, config=icnet_scenes).labels.long()

    def score(small):
        logits = F.one_hot(small, 5).permute(0, 3, 1, 2).float()
        pred = F.interpolate(logits, size=(128, 128), mode="bilinear", align_corners=False).argmax(1)
        ev = SegmentationEvaluator(5)
        ev.update(pred, labels)
        return 100 * ev.summary()["miou"]

    majority = score(downsample_labels(labels, (16, 16)))
    centre = score(F.interpolate(labels[:, None].float(), size=(16, 16), mode="nearest-exact")[:, 0].long())
    top_left = score(F.interpolate(labels[:, None].float(), size=(16, 16), mode="nearest")[:, 0].long())
    assert majority >= centre - 1.0 and majority > 85
    assert top_left < majority - 5


def test_cascade_label_guidance_loss_trains_all_branches():
    model = MODELS.build("icnet", num_classes=3, backbone_options={"width": 0.25}).train()
    labels = torch.randint(0, 3, (2, 64, 64))
    labels[:, :4] = IGNORE_INDEX
    loss, parts = CompositeLoss.from_config(CLG)(model(torch.randn(2, 3, 64, 64)), {"label": labels})
    assert set(parts) == {"sub124", "sub24", "sub4"} and torch.isfinite(loss)
    loss.backward()
    for unit in (model.cff_24, model.cff_124):
        assert unit.aux_classifier.weight.grad is not None
    assert model.sub1[0][0].weight.grad is not None and model.conv3_1.conv1.weight.grad is not None


def test_icnet_trains_its_decoder_on_a_frozen_trunk_with_cascade_label_guidance():
    from seg_core.engine import TrainConfig, train

    class Tiny(torch.utils.data.Dataset):
        images = torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8)
        labels = torch.randint(0, 3, (4, 64, 64), dtype=torch.uint8)

        def __len__(self):
            return 4

    model = MODELS.build("icnet", num_classes=3, backbone_options={"width": 0.125})
    trunk = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    sub1 = model.sub1[0][0].weight.clone()
    stats = train(model, Tiny(), TrainConfig(steps=2, batch_size=2, freeze_backbone=True, loss=CLG), seed=0)
    assert stats["steps"] == 2
    assert all(torch.equal(trunk[k], v) for k, v in model.backbone.state_dict().items())  # frozen, BN stats too
    assert not torch.equal(sub1, model.sub1[0][0].weight)  # the decoder (incl. the light sub1 branch) learned
    model.eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        assert torch.allclose(model(x)["out"], model.decode(model.extract(x), (64, 64))["out"])


@pytest.mark.parametrize(
    "name,options,key,words",
    [
        ("icnet", {"backbone": "resnet50"}, "backbone", "dilated_resnet50"),
        ("icnet", {"backbone_options": {"output_stride": 16}}, "backbone_options.output_stride", "output stride 8"),
        ("pspnet50", {"backbone_options": {"depth": 101}}, "backbone_options.depth", "unknown option"),
        ("pspnet50", {"backbone_options": {"width": 0}}, "backbone_options.width", "multiplier"),
        ("icnet", {"fusion": "deconv"}, "fusion", "expected one of"),
    ],
)
def test_builders_check_their_options_and_name_the_key(name, options, key, words):
    with pytest.raises(ConfigError, match=words) as info:
        MODELS.build(name, num_classes=3, **options)
    assert info.value.key == key


def test_pspnet_trunk_options():
    model = MODELS.build("pspnet50", num_classes=3, backbone_options={"width": 0.25, "output_stride": 16})
    assert model.backbone.output_stride == 16 and model.backbone.out_channels["layer4"] == 512


def test_icnet_complexity_counts_the_trunk_as_it_runs():
    from seg_core.complexity import count_macs, model_complexity

    model = MODELS.build("icnet", num_classes=3, backbone_options={"width": 0.125})
    c = model_complexity(model, (1, 3, 64, 64))
    trunk, decoder, total = c["parts"]["trunk"], c["parts"]["decoder"], c["total"]
    assert (
        0 < trunk["macs"] < total["macs"] and decoder["macs"] > 0 and trunk["macs"] + decoder["macs"] == total["macs"]
    )
    assert trunk["macs"] < count_macs(model.backbone, (1, 3, 64, 64))  # trunk on 1/2 and 1/4 images, not the input
    assert trunk["params"] == count_parameters(model.backbone)  # conv3_1 and res3_rest alias backbone modules
    assert trunk["params"] + decoder["params"] == total["params"]
    model.train()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model_complexity(model, (1, 3, 64, 64))
    assert model.training and all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
