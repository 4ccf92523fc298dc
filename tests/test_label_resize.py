"""One property for every place in seg_core that resizes a label map next to an image or logits:
a perfect predictor still scores 100 after the resize (or within the bound stated per site).

The predictor is an oracle that reads each pixel's class from its colour: the scene is a label
map painted black (background) and pure red, green and blue (three classes), with 1-2 px lines and
small blocks (where a half-pixel shift shows). A bilinear blend of these colours decodes to the
class with the largest blend weight (to the nearest pixel's class along an edge), so whatever a
site does to the image (a bilinear resize, a crop and enlargement), the oracle segments what the
image then shows, and a loss of mIoU against the site's resized labels is the labels'
misalignment with the image, up to a few block corners, where a 2-D blend and the cell centre
can disagree: hence the bound, a mean mIoU of at least 98.5 over each site's scenes, not 100
(measured: 99.2-100 with each site's rule, at most 0.8% of pixels missed; 49-87 with the legacy
rule planted). Each site is also run with torch's legacy ``nearest`` rule
planted in place of its own (input pixel ``floor(j * in / out)``, half an output pixel off a
bilinear image), and the same check must then fail: the property can tell the two rules apart.

Sites: the crop evaluation (:mod:`seg_core.crop_eval`), the paper-scale data augmentation's
random scale (:class:`seg_core.data.augment.JointAugment`), ICNet's cascade targets
(:func:`seg_core.losses.downsample_labels`, the labels brought to a smaller output), and the
paper-scale multi-scale inference (:mod:`seg_core.inference`: logits resized back to the labels).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seg_core import crop_eval, engine
from seg_core.contract import Segmenter
from seg_core.data import augment
from seg_core.losses import downsample_labels
from seg_core.metrics import SegmentationEvaluator

CLASSES = 4
COLOURS = torch.tensor([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.uint8)
BOUND = 98.5  # mean mIoU (%) over a site's scenes that the oracle must reach
LEGACY = {"mode": "nearest"}  # the rule each site is checked against


def _scene(seed: int, height: int = 96, width: int = 192, thickness: int = 1) -> torch.Tensor:
    """Background, 1-2 px vertical and horizontal lines (poles, wires) and 3-9 px blocks, every
    size times ``thickness``."""
    if thickness > 1:
        small = _scene(seed, height // thickness, width // thickness)
        return small.repeat_interleave(thickness, 0).repeat_interleave(thickness, 1)
    g = torch.Generator().manual_seed(seed)
    draw = lambda lo, hi: int(torch.randint(lo, hi, (), generator=g))  # noqa: E731
    label = torch.zeros(height, width, dtype=torch.uint8)
    for _ in range(12):
        c, w = draw(1, CLASSES), draw(1, 3)
        if draw(0, 2):
            x = draw(0, width - w)
            label[draw(0, height // 2) : draw(height // 2, height), x : x + w] = c
        else:
            y = draw(0, height - w)
            label[y : y + w, draw(0, width // 2) : draw(width // 2, width)] = c
    for _ in range(10):
        c, h, w = draw(1, CLASSES), draw(3, 10), draw(3, 10)
        y, x = draw(0, height - h), draw(0, width - w)
        label[y : y + h, x : x + w] = c
    return label


def _paint(label: torch.Tensor) -> torch.Tensor:
    return COLOURS[label.long()].permute(2, 0, 1).contiguous()


def _decode(image: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 or float 0-255 -> (N, C, H, W) logits: minus the distance to each colour."""
    colours = COLOURS.float().view(1, CLASSES, 3, 1, 1)
    return -((image.float()[:, None] - colours) ** 2).sum(2)


class ColourOracle(Segmenter):
    """Segments by colour: the perfect predictor of whatever the image shows."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # a device for the engine; never used
        mean = torch.tensor(engine.IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(engine.IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def extract(self, image: torch.Tensor):
        return {"image": (image * self.std + self.mean) * 255}  # back to 0-255 from engine.normalize

    def decode(self, features, size, **extra):
        return {
            "out": F.interpolate(_decode(features["image"]), size=tuple(size), mode="bilinear", align_corners=False)
        }


def _miou(pred: torch.Tensor, label: torch.Tensor) -> float:
    evaluator = SegmentationEvaluator(CLASSES)
    evaluator.update(pred.reshape(-1, *pred.shape[-2:]), label.reshape(-1, *label.shape[-2:]).long())
    return 100 * evaluator.summary()["miou"]


def _legacy_labels(label: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(label[None, None].float(), size=tuple(size), **LEGACY)[0, 0].to(label.dtype)


# ------------------------------------------------------------------------------- the sites
def crop_evaluation(planted: bool, monkeypatch) -> list[float]:
    if planted:
        monkeypatch.setattr(crop_eval, "resize_labels", _legacy_labels)
    data = [{"image": _paint(label), "label": label} for label in map(_scene, range(6))]
    scored = crop_eval.crop_metrics(ColourOracle(), data, [0, 200, 300, 400], num_classes=CLASSES, batch_size=6)
    return [100 * v for v in scored.values()]


def augmentation(planted: bool, monkeypatch) -> list[float]:
    """JointAugment.train's random scale (0.5-2.0, the paper-scale default), crop and flip. The
    image's downscale is antialiased, which blurs a structure thinner than 1 / scale px out of the
    image (not a misalignment), so these scenes' structures are 4 px and more."""
    if planted:
        monkeypatch.setattr(augment, "LABEL_INTERPOLATION", augment.v2.InterpolationMode.NEAREST)
    joint = augment.JointAugment(crop_size=(64, 64), scale_range=(0.5, 2.0))
    scores = []
    for seed in range(6):
        label = _scene(seed, thickness=4)
        image, mask = joint.train(_paint(label), label, torch.Generator().manual_seed(seed))
        keep = mask != augment.IGNORE  # padding is void, scored nowhere
        pred = _decode(image[None]).argmax(1)[0]
        scores.append(_miou(torch.where(keep, pred, 0)[None], torch.where(keep, mask, 0)[None]))
    return scores


def cascade_targets(planted: bool, monkeypatch) -> list[float]:
    """Labels brought to a 1/4 and a 1/8 output (ICNet's branches): the oracle on the image
    area-averaged to that output is the perfect low-resolution predictor. The scenes' structures
    are at least one cell and their edges 1 px inside a cell (so no cell is split evenly, where
    the majority and the averaged colour may break the tie differently)."""
    scores = []
    for factor in (4, 8):
        label = _scene(factor, 24 * factor, 48 * factor, thickness=factor)  # every structure >= one cell
        label = torch.roll(label, shifts=(1, 1), dims=(0, 1))  # edges 1 px inside the cells
        size = (label.shape[0] // factor, label.shape[1] // factor)
        target = _legacy_labels(label, size) if planted else downsample_labels(label[None].long(), size)[0]
        pred = _decode(F.interpolate(_paint(label)[None].float(), size=size, mode="area")).argmax(1)[0]
        scores.append(_miou(pred[None], target[None]))
    return scores


def multiscale_inference(planted: bool, monkeypatch) -> list[float]:
    """The paper-scale multi-scale inference: the image resized by each factor, the oracle's
    logits resized back to the labels' size (the labels are never resized here)."""
    from seg_core.registry import INFERENCE

    if planted:  # every resize in the inference by the legacy rule
        import seg_core.inference as inference

        legacy = lambda x, size, **kw: F.interpolate(x, size=size, **LEGACY)  # noqa: E731
        monkeypatch.setattr(inference, "F", type("F", (), {"interpolate": staticmethod(legacy)}))
    labels = torch.stack([_scene(seed) for seed in range(4)])
    images = torch.stack([_paint(label) for label in labels])
    infer = INFERENCE.build("multiscale", scales=[0.75, 1.0, 1.25], flip=True)
    logits = infer(ColourOracle(), engine.normalize(images), {})
    return [_miou(logits.argmax(1), labels)]


SITES = [crop_evaluation, augmentation, cascade_targets, multiscale_inference]


@pytest.mark.parametrize("site", SITES, ids=lambda f: f.__name__)
def test_a_perfect_predictor_scores_100_after_the_resize(site, monkeypatch):
    scores = site(False, monkeypatch)
    assert sum(scores) / len(scores) >= BOUND, scores


@pytest.mark.parametrize("site", SITES, ids=lambda f: f.__name__)
def test_the_check_fails_with_the_legacy_nearest_rule_planted(site, monkeypatch):
    scores = site(True, monkeypatch)
    assert sum(scores) / len(scores) < BOUND, scores
