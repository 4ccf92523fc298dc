"""The synthetic dataset: determinism, split separation, pinned statistics, knob validation."""

import numpy as np
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


def test_flat_shapes_are_the_shapes_scenes_with_one_colour_per_object():
    from scipy import ndimage

    plain = SyntheticShapes(split="val", num_images=64, seed=0)
    flat = DATASETS.build("shapes_flat", split="val", num_images=64, seed=0)
    assert torch.equal(flat.labels, plain.labels)  # the same scenes
    assert torch.equal(
        flat.images, DATASETS.build("shapes_flat", split="val", num_images=64, seed=0).images
    )  # deterministic
    assert not torch.equal(flat.images, plain.images)
    background = flat.labels == 0
    assert torch.equal(flat.images.permute(1, 0, 2, 3)[:, background], plain.images.permute(1, 0, 2, 3)[:, background])
    spreads, colours = [], {c: [] for c in range(1, 5)}
    for n in range(64):
        lab = flat.labels[n].numpy()
        for cls in range(1, 5):
            regions, count = ndimage.label(lab == cls)
            for r in range(1, count + 1):
                pixels = flat.images[n].numpy()[:, regions == r].astype(float)
                if pixels.shape[1] >= 20:
                    spreads.append(pixels.std(axis=1).max())
                    colours[cls].append(pixels.mean(axis=1))
    assert len(spreads) > 50 and np.median(spreads) < 1.2 * 8.0  # one colour + the sensor noise (std 8)
    texture_spread = np.median(
        [plain.images[n].numpy()[:, plain.labels[n].numpy() > 0].astype(float).std(axis=1).max() for n in range(64)]
    )
    assert texture_spread > 40  # the textured objects of `shapes` are far from flat
    # colour says nothing about the class: per class, the objects' colours are uniform on [0, 255]
    # (mean 127.5, std 255 / sqrt(12) per channel); a 4-standard-error band per class
    for cls, values in colours.items():
        values = np.stack(values)
        assert len(values) >= 10, cls
        assert abs(values.mean() - 127.5) < 4 * (255 / 12**0.5) / np.sqrt(values.size), (cls, values.mean())
