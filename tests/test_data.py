"""The synthetic dataset: determinism, split separation, pinned statistics, knob validation."""

import pytest
import torch

from seg_core.data.synthetic import CHUNK, ShapesConfig, SyntheticShapes
from seg_core.registry import DATASETS, ConfigError


def test_same_seed_same_bytes_and_prefix_stable():
    a = SyntheticShapes(split="train", num_images=20, seed=3)
    b = SyntheticShapes(split="train", num_images=20, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    longer = SyntheticShapes(split="train", num_images=CHUNK + 5, seed=3)
    assert torch.equal(longer.images[:20], a.images)


def test_seeds_and_splits_differ():
    a = SyntheticShapes(split="train", num_images=8, seed=0)
    assert not torch.equal(a.images, SyntheticShapes(split="train", num_images=8, seed=1).images)
    assert not torch.equal(a.images, SyntheticShapes(split="val", num_images=8, seed=0).images)
    assert not torch.equal(a.images, SyntheticShapes(split="pretrain", num_images=8, seed=0).images)


def test_item_contract():
    d = SyntheticShapes(split="val", num_images=3)
    item = d[1]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 64, 64)
    assert item["label"].dtype == torch.uint8 and item["label"].shape == (64, 64)
    assert d.num_classes == 5 and len(d.class_names) == 5


def test_pinned_statistics():
    d = SyntheticShapes(split="train", num_images=512, seed=0)
    freq = torch.bincount(d.labels.flatten().long(), minlength=5).double() / d.labels.numel()
    assert 0.70 < freq[0] < 0.90  # background dominates, as in VOC
    assert (freq[1:] > 0.02).all()  # every shape class is well represented
    # Texture is independent of class: mean colour of object pixels barely differs between classes.
    means = [d.images.permute(1, 0, 2, 3)[:, d.labels == c].float().mean().item() for c in range(1, 5)]
    assert max(means) - min(means) < 10
    # Many sizes: per-image object area spans small to large objects.
    area = (d.labels > 0).flatten(1).sum(1).double()
    assert area.min() < 100 and area.max() > 1500


def test_config_validation():
    with pytest.raises(ConfigError, match="radius_min") as info:
        ShapesConfig(radius_min=10, radius_max=5)
    assert info.value.key == "radius_min"
    with pytest.raises(ValueError, match="unknown split"):
        SyntheticShapes(split="nope", num_images=1)
    with pytest.raises(ConfigError, match="unknown shapes option") as info:
        DATASETS.build("shapes", split="train", num_images=1, colour="red")
    assert info.value.key == "colour"
