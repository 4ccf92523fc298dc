"""The street-scene generator (Gated-SCNN's mini scale): its statistics, pinned. The knobs are not
tuned toward any paper number; these tests fix what the scenes are, so a change shows."""

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from seg_core.data.streets import CAR, CLASSES, PERSON, POLE, StreetsConfig, SyntheticStreets
from seg_core.registry import DATASETS, ConfigError


@pytest.fixture(scope="module")
def scenes():
    return SyntheticStreets(split="val", num_images=128, seed=0)


@pytest.mark.slow
def test_deterministic_and_independent_of_how_many_images_are_made(scenes):
    again = DATASETS.build("streets", split="val", num_images=70, seed=0)
    assert torch.equal(again.images, scenes.images[:70]) and torch.equal(again.labels, scenes.labels[:70])
    other = SyntheticStreets(split="train", num_images=8, seed=0)
    assert not torch.equal(other.images, scenes.images[:8])
    assert scenes.images.shape == (128, 3, 128, 256) and scenes.images.dtype == torch.uint8


def test_class_fractions(scenes):
    fractions = {c: float((scenes.labels == i).float().mean()) for i, c in enumerate(CLASSES)}
    # large regions, then thin structures and small objects (measured on val seed 0, 128 images)
    assert 0.15 < fractions["road"] < 0.35 and 0.04 < fractions["sidewalk"] < 0.12
    assert 0.25 < fractions["building"] < 0.45 and 0.2 < fractions["sky"] < 0.4
    assert 0.002 < fractions["pole"] < 0.01 and 0.0005 < fractions["fence"] < 0.005
    assert 0.005 < fractions["car"] < 0.04 and 0.002 < fractions["person"] < 0.015
    assert all(float((scenes.labels == i).any(dim=(1, 2)).float().mean()) > 0.4 for i in range(len(CLASSES)))


def _components(labels, cls):
    """(width, height, bottom row) of each connected region of ``cls``."""
    out = []
    for label in labels.numpy():
        regions, n = ndimage.label(label == cls)
        for sl in ndimage.find_objects(regions):
            h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
            out.append((w, h, sl[0].stop))
    return np.array(out)


def test_objects_shrink_with_distance_and_poles_thin_with_it(scenes):
    for cls in (CAR, PERSON):
        parts = _components(scenes.labels, cls)
        rho = stats.spearmanr(parts[:, 1], parts[:, 2]).statistic
        assert len(parts) > 50 and rho > 0.6, (CLASSES[cls], rho)  # height grows with the bottom row
        assert parts[:, 1].min() <= 4  # far ones are a few pixels
    poles = _components(scenes.labels, POLE)
    assert poles[:, 0].max() <= 5 and np.median(poles[:, 0]) <= 3  # thin: a few pixels at most
    assert stats.spearmanr(poles[:, 0], poles[:, 2]).statistic > 0.3  # wider near the bottom


def test_far_objects_gather_near_the_centre_where_the_crop_evaluation_looks(scenes):
    small = _components(scenes.labels, CAR)
    far = small[small[:, 1] <= 6]
    assert len(far) > 10
    rows = far[:, 2]
    assert np.median(rows) < 0.6 * 128  # near the horizon, around the image centre


def test_bad_knobs_name_the_key():
    with pytest.raises(ConfigError) as info:
        StreetsConfig(horizon_min=0.9)
    assert info.value.key == "horizon_min"
    with pytest.raises(ConfigError) as info:
        DATASETS.build("streets", split="val", num_images=1, poles=3)
    assert info.value.key == "poles"


def test_the_group_miou_family_splits_the_classes_into_large_thin_and_small():
    from seg_core.registry import METRIC_FAMILIES

    label = torch.tensor([[[0, 1, 2, 3, 4, 5, 6, 7]]], dtype=torch.uint8)
    pred = label.clone().long()
    pred[0, 0, 4] = 0  # the pole pixel called road: pole IoU 0, road IoU 1/2
    family = METRIC_FAMILIES.build("streets_groups", num_classes=8)
    family.update(pred, {"label": label})
    scores = family.summary()
    assert scores["thin_miou"] == pytest.approx(0.5)  # pole 0, fence 1
    assert scores["small_miou"] == 1.0 and scores["large_miou"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    with pytest.raises(ConfigError):
        METRIC_FAMILIES.build("streets_groups", num_classes=5)
