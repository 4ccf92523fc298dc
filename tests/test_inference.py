"""Inference modes of the evaluation (seg_core.inference): sliding windows and multi-scale + flip
against the whole-image pass, on models where the answer is known."""

import pytest
import torch
from torch import nn

from seg_core.engine import whole_image
from seg_core.registry import INFERENCE, ConfigError


class Pointwise(nn.Module):
    """A 1x1 convolution: each pixel's logits depend on that pixel alone, so any tiling of the
    image gives the whole-image logits exactly."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, 1)

    def forward(self, x):
        return {"out": self.conv(x)}


@pytest.mark.parametrize(("crop", "stride"), [((16, 16), (8, 8)), ((16, 24), (16, 10)), ((64, 64), (32, 32))])
def test_sliding_windows_of_a_pointwise_model_equal_the_whole_image(crop, stride):
    image = torch.randn(2, 3, 40, 50)
    model = Pointwise().eval()
    slid = INFERENCE.build("slide", crop=crop, stride=stride)(model, image, {})
    assert slid.shape == (2, 5, 40, 50)
    torch.testing.assert_close(slid, whole_image()(model, image, {}), rtol=1e-5, atol=1e-5)


def test_sliding_windows_average_where_they_overlap():
    class Position(nn.Module):  # logits = the window's own column index: overlap shows as an average
        def forward(self, x):
            return {"out": torch.arange(x.shape[-1], dtype=torch.float).expand(x.shape[0], 1, *x.shape[-2:])}

    out = INFERENCE.build("slide", crop=(4, 4), stride=(2, 2))(Position(), torch.zeros(1, 3, 4, 6), {})
    assert out[0, 0, 0].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 3.0]  # columns 2-3 seen as 2,3 and as 0,1


def test_multiscale_at_scale_one_without_flip_is_the_log_softmax_of_the_whole_image():
    image = torch.randn(1, 3, 24, 32)
    model = Pointwise().eval()
    out = INFERENCE.build("multiscale", scales=[1.0], flip=False)(model, image, {})
    torch.testing.assert_close(out, torch.log_softmax(model(image)["out"], 1), rtol=1e-5, atol=1e-5)


def test_multiscale_with_flip_of_a_pointwise_model_is_the_whole_image():
    image = torch.randn(1, 3, 24, 32)
    model = Pointwise().eval()
    out = INFERENCE.build(
        "multiscale", scales=[1.0], flip=True, inner={"type": "slide", "crop": [16, 16], "stride": [8, 8]}
    )(model, image, {})
    torch.testing.assert_close(out, torch.log_softmax(model(image)["out"], 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kind", "options", "key"),
    [
        ("slide", {"crop": [16], "stride": [8, 8]}, "crop"),
        ("slide", {"crop": [16, 16], "stride": [20, 8]}, "stride"),
        ("multiscale", {"scales": []}, "scales"),
        ("multiscale", {"inner": {"type": "multiscale"}}, "inner"),
    ],
)
def test_bad_inference_options_name_the_key(kind, options, key):
    with pytest.raises(ConfigError) as info:
        INFERENCE.build(kind, **options)
    assert info.value.key == key
