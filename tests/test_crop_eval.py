"""Gated-SCNN's distance-based (crop) evaluation: crop factor 0 is the plain evaluation; a crop
enlarges the centre; a spec asks for it with eval.crop_factors and records crop<CF>_miou."""

import json

import pytest
import torch
from conftest import cli_args
from torch import nn

from ablations.cli import main
from seg_core import engine
from seg_core.contract import Segmenter
from seg_core.crop_eval import CroppedView, crop_metrics, crop_pixels
from seg_core.data.synthetic import SyntheticShapes
from seg_core.layers import build_backbone


class _Colour(Segmenter):
    """Predicts from colour alone (a 1x1 head on a tiny trunk), so crops change its input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = build_backbone("mini_resnet", {"stem_width": 4, "widths": [4, 4, 8]})
        self.head = nn.Conv2d(8, 5, 1)
        self.decoder_inputs = ("layer3",)

    def decode(self, features, size, **extra):
        out = self.head(features["layer3"])
        return {"out": nn.functional.interpolate(out, size=tuple(size), mode="bilinear", align_corners=False)}


def test_crop_factor_zero_is_the_plain_evaluation():
    data = SyntheticShapes(split="val", num_images=16, seed=0)
    model = _Colour().eval()
    plain = engine.evaluate(model, data, num_classes=5, batch_size=8)
    scored = crop_metrics(model, data, [0, 400], num_classes=5, batch_size=8)
    assert scored["crop0_miou"] == pytest.approx(plain["miou"], abs=1e-12)
    assert scored["crop400_miou"] != scored["crop0_miou"]


def test_a_crop_cuts_the_same_pixels_from_every_side_and_resizes_back():
    label = torch.zeros(64, 128, dtype=torch.uint8)
    label[28:36, 60:68] = 3  # a small object at the centre
    image = torch.zeros(3, 64, 128, dtype=torch.uint8)
    view = CroppedView([{"image": image, "label": label}], crop_pixels(400, 128))
    assert crop_pixels(400, 128) == 25 and crop_pixels(400, 2048) == 400
    item = view[0]
    assert item["label"].shape == (64, 128) and item["image"].dtype == torch.uint8
    # 25 px off each side leaves 14 x 78, enlarged about 4.6x vertically and 1.6x horizontally
    assert int((item["label"] == 3).sum()) > 4 * int((label == 3).sum())
    with pytest.raises(ValueError, match="leaves nothing"):
        CroppedView([{"image": image, "label": label}], 40)[0]


def test_a_spec_records_the_crop_metrics_and_their_code(tiny):
    text = (
        tiny["spec"]
        .read_text()
        .replace("[scales.mini.train]", "[scales.mini.eval]\ncrop_factors = [0, 200]\n\n[scales.mini.train]")
    )
    tiny["spec"].write_text(text)
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--variant", "baseline", "--seeds", "0")) == 0
    (path,) = (tiny["results"] / "tiny" / "mini").glob("baseline--*.json")
    record = json.loads(path.read_text())
    assert record["metrics"]["crop0_miou"] == pytest.approx(record["metrics"]["miou"], abs=1e-12)
    assert 0 <= record["metrics"]["crop200_miou"] <= 1
    assert "seg_core/crop_eval.py" in record["provenance"]["code"]
    tiny["spec"].write_text(text.replace("crop_factors = [0, 200]", "crop_factors = [0, -5]"))
    assert main(cli_args(tiny, "run", "tiny", "--dry-run")) == 2
