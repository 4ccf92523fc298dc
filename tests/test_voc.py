"""The paper-scale VOC loader, on a tiny VOC-layout folder written by the test."""

import numpy as np
import pytest
import torch
from PIL import Image

from seg_core.data.checks import DataError
from seg_core.metrics import boundary_band
from seg_core.registry import DATASETS


def _write_voc(root, names, size=(40, 60)):
    base = root / "VOCdevkit" / "VOC2012"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "SegmentationClass").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(base / "JPEGImages" / f"{name}.jpg")
        label = np.zeros(size, dtype=np.uint8)
        label[10:30, 20:40] = 15
        label[9, 20:40] = 255
        img = Image.fromarray(label, mode="P")
        img.putpalette([0] * 768)
        img.save(base / "SegmentationClass" / f"{name}.png")
    for split in ("train", "val", "train_aug"):
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")


def test_voc_val_is_padded_with_ignore(tmp_path):
    _write_voc(tmp_path, ["a", "b"])
    ds = DATASETS.build("voc2012", split="val", root=str(tmp_path), crop_size=64)
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.uint8
    assert item["label"].shape == (64, 64)
    assert int(item["label"][50, 10]) == 255 and int(item["label"][20, 30]) == 15 and int(item["label"][9, 25]) == 255
    assert ds.num_classes == 21
    assert item["image"][:, 50, 10].tolist() == [124, 116, 104]  # padded with the mean colour
    band = boundary_band(item["label"][None].long(), 1.0)[0]
    assert (
        band[20, 19] and band[20, 20] and not band[39, 30] and not band[20:40, 59].any()
    )  # the padded border is no boundary


def test_voc_train_aug_list_crops(tmp_path):
    _write_voc(tmp_path, ["a", "b", "c"], size=(80, 90))
    ds = DATASETS.build("voc2012", split="train", root=str(tmp_path), crop_size=64, num_images=2)
    assert len(ds) == 2
    assert ds.get(1, torch.Generator().manual_seed(0))["label"].shape == (64, 64)  # training: cropped
    assert ds[1]["label"].shape == (80, 90)  # evaluation: whole (larger than the crop: not padded)


def test_voc_label_folder_is_an_option(tmp_path):
    _write_voc(tmp_path, ["a", "b"])
    base = tmp_path / "VOCdevkit" / "VOC2012"
    (base / "SegmentationClass").rename(base / "SegmentationClassAug")
    ds = DATASETS.build("voc2012", split="train", root=str(tmp_path), crop_size=64, label_dir="SegmentationClassAug")
    assert ds[0]["label"].shape == (64, 64)
    from seg_core.data.voc import verify_voc

    verify_voc({"root": str(tmp_path), "label_dir": "SegmentationClassAug"}, ["train", "val"])
    with pytest.raises(DataError, match="SegmentationClass: missing folder"):
        verify_voc({"root": str(tmp_path)}, ["train", "val"])


def test_voc_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no VOCdevkit/VOC2012 here"):
        DATASETS.build("voc2012", split="val", root=str(tmp_path))


def _write_asymmetric_voc(root, n=6, size=(40, 60)):
    """Images whose red channel is 255 exactly where the label is the object (class 15), so
    an image and a label that were flipped or cropped differently no longer match."""
    base = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / d).mkdir(parents=True, exist_ok=True)
    names = [f"im{i}" for i in range(n)]
    for i, name in enumerate(names):
        label = np.zeros(size, dtype=np.uint8)
        label[5 + i : 30, 3 + 2 * i : 25 + i] = 15  # off-centre: a flip moves it
        image = np.zeros((*size, 3), dtype=np.uint8)
        image[..., 0] = np.where(label == 15, 255, 0)
        Image.fromarray(image).save(base / "JPEGImages" / f"{name}.png")
        (base / "JPEGImages" / f"{name}.png").rename(base / "JPEGImages" / f"{name}.jpg")  # lossless under a .jpg name
        img = Image.fromarray(label, mode="P")
        img.putpalette([0] * 768)
        img.save(base / "SegmentationClass" / f"{name}.png")
    (base / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(names) + "\n")


@pytest.mark.parametrize("workers", [0, 2])
def test_flips_and_crops_keep_image_and_label_aligned_and_are_redrawn_per_sample(tmp_path, workers):
    from seg_core.engine import TrainConfig, train_batches

    _write_asymmetric_voc(tmp_path)
    ds = DATASETS.build("voc2012", split="train", root=str(tmp_path), crop_size=32, scale_range=[1.0, 1.0])
    config = TrainConfig(steps=12, batch_size=3, workers=workers)
    seen = {}
    for idx, batch in train_batches(ds, config, seed=0):
        red = batch["image"][:, 0] == 255
        obj = batch["label"] == 15
        assert torch.equal(red, obj)  # every pixel: the image's object is where the label says
        for i, label in zip(idx.tolist(), batch["label"]):
            seen.setdefault(i, set()).add(label.numpy().tobytes())
    assert max(len(v) for v in seen.values()) > 1  # the same image, augmented differently at different steps
    again = [b["label"] for _, b in train_batches(ds, config, seed=0)]
    assert all(torch.equal(a, b) for a, b in zip(again, [b["label"] for _, b in train_batches(ds, config, seed=0)]))
