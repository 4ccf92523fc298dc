"""The engine's named hooks, each exercised by a small test double registered here: extra model
inputs, extra targets, evaluation post-processing and metric families. A paper that needs one
(a CRF, image gradients, boundary targets, a boundary F-score) plugs in the same way."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seg_core.contract import Segmenter
from seg_core.data.synthetic import ShapesConfig, SyntheticShapes
from seg_core.engine import TrainConfig, evaluate, train
from seg_core.layers import build_backbone
from seg_core.registry import INPUTS, METRIC_FAMILIES, POSTPROCESSORS, TARGETS, ConfigError

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


def _tiny_model():
    from seg_core.registry import MODELS

    torch.manual_seed(0)
    return MODELS.build(
        "single_head",
        num_classes=5,
        backbone="mini_resnet",
        head="gcn",
        k=3,
        backbone_options={"stem_width": 4, "widths": [4, 4, 8]},
    )


def test_a_fine_tuned_backbone_gets_its_own_learning_rate():
    seen = {}
    original = torch.optim.SGD.__init__

    def spy(self, groups, **kwargs):
        seen["groups"] = [dict(g) if isinstance(g, dict) else g for g in groups]  # as constructed
        original(self, groups, **kwargs)

    torch.optim.SGD.__init__ = spy
    try:
        train(_tiny_model(), _data(), TrainConfig(steps=2, batch_size=4, lr=0.01, backbone_lr_mult=0.1), seed=0)
        backbone_group, head_group = seen["groups"]
        assert backbone_group["lr"] == pytest.approx(0.001) and "lr" not in head_group
        train(_tiny_model(), _data(), TrainConfig(steps=2, batch_size=4, lr=0.01), seed=0)
        assert isinstance(seen["groups"], list) and not isinstance(seen["groups"][0], dict)  # one group, as before
    finally:
        torch.optim.SGD.__init__ = original


def test_bf16_autocast_and_channels_last_train_and_evaluate():
    model = _tiny_model()
    stats = train(model, _data(), TrainConfig(steps=3, batch_size=4, amp="bf16", channels_last=True), seed=0)
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss, _ in stats["loss_curve"])
    assert 0 <= evaluate(model, _data(), num_classes=5, amp="bf16")["miou"] <= 1
    with pytest.raises(ConfigError, match="amp"):
        TrainConfig(amp="fp8")


def test_the_default_inference_is_the_whole_image():
    model, data = _tiny_model(), _data()
    a = evaluate(model, data, num_classes=5)
    b = evaluate(model, data, num_classes=5, inference={"type": "whole"})
    a.pop("eval_s"), b.pop("eval_s")
    assert a == b


@POSTPROCESSORS.register("test_sharpen")
def _sharpen(*, power: float = 1.0):
    return lambda probs, batch: probs**power


def test_a_postprocessor_grid_is_searched_on_held_out_data_never_on_val(monkeypatch):
    from ablations import protocol

    seen = []
    real = protocol.engine.evaluate

    def spy(model, dataset, **kwargs):
        seen.append((id(dataset), kwargs.get("postprocess")))
        return real(model, dataset, **kwargs)

    monkeypatch.setattr(protocol.engine, "evaluate", spy)
    config = {
        "model": {
            "name": "single_head",
            "backbone": "mini_resnet",
            "head": "pointwise",
            "backbone_options": {"stem_width": 4, "widths": [4, 4, 8]},
        },
        "data": {
            "name": "shapes",
            "size": 32,
            "radius_min": 3.0,
            "radius_max": 12.0,
            "train_images": 16,
            "val_images": 8,
            "holdout_images": 8,
        },
        "pretrain": {},
        "train": {"steps": 2, "batch_size": 4},
        "eval": {"postprocess": {"type": "test_sharpen", "power": [1.0, 3.0]}},
        "seed": 0,
    }
    _, numbers = protocol.run(config, desc="t", backbone_state=None, backbone_id=None)
    search = numbers["postprocess_search"]
    assert search["on"] == "holdout" and [t["params"]["power"] for t in search["trials"]] == [1.0, 3.0]
    val = protocol.dataset(config["data"], "val", 8)
    tried = [(ds, post) for ds, post in seen if post and isinstance(post.get("power"), float)]
    search_sets = {ds for ds, _ in tried[:2]}
    assert id(val) not in search_sets  # the search never evaluated val
    assert seen[2] == (id(val), search["chosen"])  # then val, once, with the chosen setting


def test_post_processed_evaluation_also_scores_the_raw_predictions():
    torch.manual_seed(0)
    model, data = _NeedsInput(5), _data()
    plain = evaluate(model, data, num_classes=5, band_width=0.875)
    post = evaluate(model, data, num_classes=5, band_width=0.875, postprocess={"type": "test_reverse"})
    for key in ("miou", "pixel_acc", "boundary_miou", "interior_pixel_acc", "per_class_iou"):
        assert post[f"raw_{key}"] == plain[key]  # the same predictions, before post-processing
    assert "raw_miou" not in plain


def test_a_model_refuses_evaluation_options_it_does_not_support():
    with pytest.raises(ConfigError) as info:
        _tiny_model().reconfigure(output_stride=8)
    assert info.value.key == "output_stride"
    _tiny_model().reconfigure()  # no options: nothing to change
