"""The engine's named hooks, each exercised by a small test double registered here: extra model
inputs, extra targets, evaluation post-processing and metric families. A paper that needs one
(a CRF, image gradients, boundary targets, a boundary F-score) plugs in the same way."""

import torch
import torch.nn.functional as F
from torch import nn

from seg_core.contract import Segmenter
from seg_core.data.synthetic import ShapesConfig, SyntheticShapes
from seg_core.engine import TrainConfig, evaluate, train
from seg_core.layers import build_backbone
from seg_core.registry import INPUTS, METRIC_FAMILIES, POSTPROCESSORS, TARGETS

CALLS = {"input": 0, "target": 0}


@INPUTS.register("test_brightness")
def _brightness(batch):
    CALLS["input"] += 1
    return batch["image"].float().mean(dim=(1, 2, 3)) / 255.0  # one number per image, from the raw uint8 image


@TARGETS.register("test_foreground")
def _foreground(batch):
    CALLS["target"] += 1
    return (batch["label"] > 0).long()


@POSTPROCESSORS.register("test_reverse")
def _reverse(*, temperature: float = 1.0):
    """Reverses the class order of the probabilities: every prediction becomes ``C - 1 - c``."""
    return lambda probs, batch: probs.flip(1) / temperature


class _PixelCount:
    def __init__(self, num_classes: int) -> None:
        self.n = 0

    def update(self, pred, batch) -> None:
        self.n += pred.numel()

    def summary(self) -> dict:
        return {"test_pixels": self.n}


METRIC_FAMILIES.register("test_pixels", metrics=("test_pixels",))(_PixelCount)


class _NeedsInput(Segmenter):
    extra_inputs = ("test_brightness",)

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = build_backbone("mini_resnet", {"stem_width": 4, "widths": [4, 4, 8]})
        self.head = nn.Conv2d(8, num_classes, 1)
        self.fg = nn.Conv2d(8, 2, 1)
        self.decoder_inputs = ("layer3",)

    def decode(self, features, size, *, test_brightness):
        x = features["layer3"] * (1 + test_brightness.view(-1, 1, 1, 1))
        up = lambda t: F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)  # noqa: E731
        return {"out": up(self.head(x)), "fg": up(self.fg(x))}


def _data():
    return SyntheticShapes(split="train", num_images=16, config=ShapesConfig(size=32, radius_min=3.0, radius_max=12.0))


def test_extra_inputs_and_targets_reach_the_model_and_the_loss():
    CALLS.update(input=0, target=0)
    model = _NeedsInput(5)
    loss = {
        "seg": {"type": "cross_entropy"},
        "fg": {"type": "cross_entropy", "output": "fg", "target": "test_foreground", "weight": 0.5},
    }
    stats = train(model, _data(), TrainConfig(steps=3, batch_size=4, loss=loss), seed=0)
    assert CALLS == {"input": 3, "target": 3} and len(stats["loss_curve"]) == 3
    assert model.fg.weight.grad is not None  # the extra target's loss term trained its output


def test_post_processing_and_metric_families_shape_the_evaluation():
    torch.manual_seed(0)
    model, data = _NeedsInput(5), _data()
    plain = evaluate(model, data, num_classes=5, metrics=["test_pixels"])
    post = evaluate(
        model, data, num_classes=5, postprocess={"type": "test_reverse", "temperature": 2.0}, metrics=["test_pixels"]
    )
    assert plain["test_pixels"] == post["test_pixels"] == 16 * 32 * 32
    assert post["postprocess_s"] >= 0 and "postprocess_s" not in plain
    # exactly the metrics of the reversed predictions (class c -> 4 - c), computed independently
    from seg_core.engine import normalize
    from seg_core.metrics import SegmentationEvaluator

    model.eval()
    with torch.no_grad():
        x = data.images
        brightness = x.float().mean(dim=(1, 2, 3)) / 255.0
        pred = model(normalize(x), test_brightness=brightness)["out"].argmax(1)
    reference = SegmentationEvaluator(5)
    reference.update(4 - pred, data.labels.long())
    assert post["miou"] == reference.summary()["miou"] and post["per_class_iou"] == reference.summary()["per_class_iou"]
    assert plain["miou"] != post["miou"]
