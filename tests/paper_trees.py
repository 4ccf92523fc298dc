"""Tiny dataset trees in the real layouts (VOC 2012 + SBD with ``.mat`` labels, Cityscapes fine),
and tiny paper-scale specs, for the paper-scale tests. Images are random; labels are rectangles."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "ablations" / "specs"


def _image(rng, size) -> Image.Image:
    return Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8))


def _objects(rng, size, classes, void: int | None = None) -> np.ndarray:
    label = np.full(size, classes[0], dtype=np.uint8)
    for _ in range(2):
        top, left = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
        cls = classes[1 + rng.integers(0, len(classes) - 1)]
        label[top : top + size[0] // 3, left : left + size[1] // 3] = cls
        if void is not None:
            label[top, left : left + size[1] // 3] = void
    return label


def write_voc_sbd(root: Path, *, voc_train=("v1", "v2"), voc_val=("v3", "v4"), sbd_train=("s1", "s2", "v3"),
                  sbd_val=("s3",), size=(48, 64)) -> Path:  # fmt: skip
    """VOCdevkit/VOC2012 (palette PNG labels, 255 void outlines) and SBD (``.mat`` labels); SBD
    lists one VOC val image (``v3``), which train_aug must leave out."""
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    base = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / d).mkdir(parents=True, exist_ok=True)
    for name in (*voc_train, *voc_val):
        _image(rng, size).save(base / "JPEGImages" / f"{name}.jpg")
        label = Image.fromarray(_objects(rng, size, list(range(21)), void=255), mode="P")
        label.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        label.save(base / "SegmentationClass" / f"{name}.png")
    (base / "ImageSets/Segmentation/train.txt").write_text("\n".join(voc_train) + "\n")
    (base / "ImageSets/Segmentation/val.txt").write_text("\n".join(voc_val) + "\n")
    sbd = root / "SBD"
    for d in ("img", "cls"):
        (sbd / d).mkdir(parents=True, exist_ok=True)
    for name in (*sbd_train, *sbd_val):
        _image(rng, size).save(sbd / "img" / f"{name}.jpg")
        segmentation = _objects(rng, size, list(range(21)))
        savemat(sbd / "cls" / f"{name}.mat", {"GTcls": {"Segmentation": segmentation, "CategoriesPresent": [1]}})
    (sbd / "train.txt").write_text("\n".join(sbd_train) + "\n")
    (sbd / "val.txt").write_text("\n".join(sbd_val) + "\n")
    return root


CITYSCAPES_IDS = (0, 1, 7, 8, 11, 17, 21, 23, 24, 26)  # unlabeled, ego vehicle, road, sidewalk, building, ...


def write_cityscapes(root: Path, *, train=4, val=2, size=(64, 128)) -> Path:
    """leftImg8bit/{train,val}/<city>/..._leftImg8bit.png and gtFine/.../..._gtFine_labelIds.png."""
    rng = np.random.default_rng(1)
    for split, n in (("train", train), ("val", val)):
        for i in range(n):
            city = "aachen" if i % 2 else "bremen"
            stem = f"{city}_{i:06d}_000019"
            images = root / "leftImg8bit" / split / city
            labels = root / "gtFine" / split / city
            images.mkdir(parents=True, exist_ok=True)
            labels.mkdir(parents=True, exist_ok=True)
            _image(rng, size).save(images / f"{stem}_leftImg8bit.png")
            ids = _objects(rng, size, list(CITYSCAPES_IDS))
            Image.fromarray(ids, mode="L").save(labels / f"{stem}_gtFine_labelIds.png")
    return root


TINY_GCN_PAPER = """
# A few steps of the paper scale on a tiny tree: ResNet-18 (the ImageNet weights from the test's
# torch hub cache), 64 px crops.
[scales.paper]
seeds = [0]
[scales.paper.model]
backbone = "resnet18"
backbone_options = { output_stride = 32, pretrained = "IMAGENET1K_V1" }
[scales.paper.data]
crop_size = 64
train_images = 5
val_images = 2
[scales.paper.train]
steps = 2
batch_size = 2
lr = 1e-3
device = "cpu"
workers = 0
freeze_backbone = true
[scales.paper.eval]
batch_size = 2
"""

TINY_CITYSCAPES_RUN = """
[scales.paper.data]
crop_size = [64, 128]
train_images = 4
val_images = 2
[scales.paper.train]
steps = 2
batch_size = 2
device = "cpu"
workers = 0
"""  # a few steps of a Cityscapes paper scale on the tree write_cityscapes makes (64x128 images)

TINY_ICNET_PAPER = (
    """
# ICNet's paper scale on a tiny Cityscapes tree: the trunk at 1/8 width from a checkpoint the test writes.
[scales.paper.model]
backbone_options = { width = 0.125 }
[scales.paper.pretrain]
checkpoint = "{checkpoint}"
[scales.paper.eval]
batch_size = 1
"""
    + TINY_CITYSCAPES_RUN
)


def tiny_specs(dest: Path, spec_id: str, delta: str) -> Path:
    """``dest`` holding the real spec ``spec_id`` and its bases, with ``delta`` as one more base
    (the last, so it wins): the spec's own paper protocol, shrunk."""
    shutil.copytree(SPECS / "_base", dest / "_base")
    text = (SPECS / f"{spec_id}.toml").read_text()
    (dest / "_base" / "tiny-paper.toml").write_text(delta)
    start = text.index("extends = [") + len("extends = [")
    end = text.index("]", start)
    text = text[:end] + ', "_base/tiny-paper.toml"' + text[end:]
    (dest / f"{spec_id}.toml").write_text(text)
    return dest


def fake_imagenet_weights(torch_home: Path, arch: str = "resnet18", enum_name: str = "IMAGENET1K_V1") -> Path:
    """A state dict (random weights) under the file name torchvision's enum points at, in
    ``<TORCH_HOME>/hub/checkpoints``: what a user places there from the enum's URL."""
    import os

    import torch
    import torchvision

    weights = torchvision.models.get_model_weights(arch)[enum_name]
    path = torch_home / "hub" / "checkpoints" / os.path.basename(weights.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.get_model(arch, weights=None).state_dict(), path)
    return path


TINY_GSCNN_PAPER = (
    """
# Gated-SCNN's paper scale on a tiny Cityscapes tree: the cascaded trunk at 1/16 width from
# scratch (no ImageNet weights here), narrow heads.
[scales.paper.model]
backbone_options = { width = 0.0625 }
width = 16
low_level_channels = 6
decoder_width = 16
"""
    + TINY_CITYSCAPES_RUN
)
