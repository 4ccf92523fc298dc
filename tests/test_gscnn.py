"""Gated-SCNN: what is special about it (the generated registry tests cover shapes and the
contract): the gated convolution's gate and residual form, the two outputs, the Canny input, and
the ablation switches."""

import pytest
import torch
from conftest import needs_gscnn

from seg_core.models.gscnn import GatedConv, image_gradients
from seg_core.registry import MODELS, ConfigError

TINY = {"backbone_options": {"width": 0.0625, "units": [1, 1, 1, 3], "output_stride": 8}, "aspp_rates": [1, 2],
        "width": 8, "shape_width": 8, "low_level_channels": 4, "decoder_width": 8}  # fmt: skip


def test_the_gate_is_in_0_1_and_at_0_the_layer_is_a_plain_1x1_convolution():
    torch.manual_seed(0)
    layer = GatedConv(4).eval()
    x, s = torch.randn(2, 4, 6, 6), torch.randn(2, 1, 6, 6)
    alpha = layer.gate(torch.cat([x, s], 1))
    assert alpha.shape == (2, 1, 6, 6) and ((alpha > 0) & (alpha < 1)).all()
    torch.testing.assert_close(layer(x, s), layer.out(x * (alpha + 1)))  # the residual form, Eq. 2
    with torch.no_grad():  # drive the gate to 0: sigmoid of a very negative BN output
        layer.gate[4].weight.zero_()
        layer.gate[4].bias.fill_(-1e4)
    torch.testing.assert_close(layer(x, s), layer.out(x))
    torch.testing.assert_close(GatedConv(4, gated=False)(x, s).shape, layer.out(x).shape)


@needs_gscnn
def test_two_outputs_and_the_image_gradients_input():
    torch.manual_seed(0)
    model = MODELS.build("gscnn", num_classes=5, **TINY).eval()
    assert model.extra_inputs == ("image_gradients",)
    raw = torch.zeros(2, 3, 40, 48, dtype=torch.uint8)
    raw[:, :, 10:30, 12:36] = 200  # one bright rectangle: its outline is the only Canny edge
    grads = image_gradients({"image": raw})
    assert grads.shape == (2, 1, 40, 48) and set(grads.unique().tolist()) == {0.0, 1.0}
    assert grads[0, 0, 20, 24] == 0 and grads[0, 0, 20, 11:13].sum() >= 1  # inside: none; on the outline: an edge
    with pytest.raises(ValueError, match="raw uint8"):
        image_gradients({"image": raw.float()})
    with torch.no_grad():
        out = model(raw.float() / 255, image_gradients=grads)
    assert out["out"].shape == (2, 5, 40, 48) and out["boundary"].shape == (2, 1, 40, 48)


def test_the_ablation_switches_remove_the_gates_and_the_canny_input():
    full = MODELS.build("gscnn", num_classes=5, **TINY)
    plain = MODELS.build("gscnn", num_classes=5, gated=False, image_gradients=False, **TINY)
    assert plain.extra_inputs == () and all(not g.gated for g in plain.shape.gates)
    assert plain.fuse.in_channels == 1 and full.fuse.in_channels == 2
    gate_params = sum(p.numel() for g in full.shape.gates for p in g.gate.parameters())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(full) - count(plain) == gate_params + 1  # the gates, and the fusion's second input weight
    assert set(full.parts()) == {"backbone", "shape", "head", "decoder"}


def test_aspp_dropout_is_scaled_to_the_width_as_deeplab_v3s():
    """The fused ASPP's dropout follows DeepLab v3's rule (0.1 at 256 channels, DeepLab's TF code,
    is 1/73 at 32), and a rate outside [0, 1) is refused by name."""
    for width, expected in ((256, 0.1), (32, 1 / 73)):
        model = MODELS.build("gscnn", num_classes=5, **{**TINY, "width": width})
        drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        assert len(drops) == 1 and drops[0].p == pytest.approx(expected)
        assert model.describe()["dropout_at_256"] == 0.1
        assert model.describe()["dropout"] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ConfigError, match="dropout"):
        MODELS.build("gscnn", num_classes=5, **TINY, dropout=1.0)


def test_the_shape_stream_starts_from_the_stems_stride_2_feature_as_the_public_code():
    """The public code feeds the shape stream its first (full-resolution) layer; on a ResNet that
    is the stem's conv + BN + ReLU before the max pool, at stride 2: not block1 (stride 4)."""
    torch.manual_seed(0)
    model = MODELS.build("gscnn", num_classes=5, **TINY).eval()
    image = torch.randn(1, 3, 64, 96)
    features = model.extract(image)
    assert list(features)[:2] == ["stem", "block1"] and features["stem"].shape[-2:] == (32, 48)
    assert model.shape.reduce.in_channels == features["stem"].shape[1]
    with torch.no_grad():  # the blocks are the trunk's own, unchanged by reading the stem
        plain = model.backbone(image)
        assert all(torch.equal(plain[n], features[n]) for n in plain)
        seen = {}
        model.shape.reduce.register_forward_hook(lambda m, i, o: seen.update(input=i[0]))
        model(image, image_gradients=torch.zeros(1, 1, 64, 96))
    assert torch.equal(seen["input"], features["stem"])
