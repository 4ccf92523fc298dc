"""Gated-SCNN's distance-based (crop) evaluation: crop factor 0 is the plain evaluation; a crop
enlarges the centre; a spec asks for it with eval.crop_factors and records crop<CF>_miou."""

import json

import pytest
import torch
from conftest import cli_args
from torch import nn

from ablations.cli import main
from seg_core.contract import Segmenter
from seg_core.crop_eval import CroppedView, crop_box, crop_metrics
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


def test_the_crop_is_the_papers_1_to_2_box_near_the_vanishing_point():
    """100 px off every side but the top, then CF off the top and bottom and 2 CF off the left and
    right (Sec. 4.2 as we read it): a 1:2 box, scaled to the image's width."""
    assert crop_box(0, 1024, 2048) == (0, 924, 100, 1948)  # CF 0: only the margin
    assert crop_box(400, 1024, 2048) == (400, 524, 900, 1148)  # 124 x 248
    for factor in (0, 200, 300, 400):
        top, bottom, left, right = crop_box(factor, 1024, 2048)
        assert (right - left) == 2 * (bottom - top)
    assert crop_box(400, 128, 256) == (50, 65, 113, 143)  # the streets' 128 x 256: 15 x 30
    with pytest.raises(ValueError, match="leaves nothing"):
        crop_box(500, 128, 256)


def test_a_crop_enlarges_the_centre_and_changes_the_input():
    data = SyntheticShapes(split="val", num_images=16, seed=0)
    model = _Colour().eval()
    scored = crop_metrics(model, data, [0, 400], num_classes=5, batch_size=8)
    assert scored["crop400_miou"] != scored["crop0_miou"]
    label = torch.zeros(64, 128, dtype=torch.uint8)
    label[30:34, 60:68] = 3  # a small object near the vanishing point
    image = torch.zeros(3, 64, 128, dtype=torch.uint8)
    item = CroppedView([{"image": image, "label": label}], 300)[0]
    assert item["label"].shape == (64, 128) and item["image"].dtype == torch.uint8
    assert int((item["label"] == 3).sum()) > 4 * int((label == 3).sum())


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
    assert 0 <= record["metrics"]["crop0_miou"] <= 1 and 0 <= record["metrics"]["crop200_miou"] <= 1
    assert record["metrics"]["crop0_miou"] != record["metrics"]["miou"]  # CF 0 still cuts the 100 px margin
    assert any(k.startswith("seg_core/crop_eval.py::") for k in record["provenance"]["code"])
    tiny["spec"].write_text(text.replace("crop_factors = [0, 200]", "crop_factors = [0, -5]"))
    assert main(cli_args(tiny, "run", "tiny", "--dry-run")) == 2
