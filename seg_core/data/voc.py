"""PASCAL VOC 2012 segmentation for the paper scale, read from a local root (no download).

Expects the standard layout ``<root>/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass,
ImageSets/Segmentation}`` (torchvision's ``VOCSegmentation``); SBD-augmented training lists go in
``ImageSets/Segmentation/<split>.txt`` like the official ones (e.g. ``train_aug``). Following
Large Kernel Matters, images are padded to ``crop_size`` (512: a 16x16 top map at stride 32)
with the mean colour (the ImageNet mean the weights were trained with, so padding is zero after
normalisation, as in the papers' Caffe pipelines), labels with 255 (ignored; the boundary band
treats padding as no label, see :func:`seg_core.metrics.boundary_band`); training crops are
random, with random horizontal flips. ``label_dir`` picks the label folder: ``SegmentationClass``
(the official 1,464/1,449 annotations) or ``SegmentationClassAug`` (the SBD-augmented labels that
go with the ``train_aug`` list).
Items have the contract of the synthetic dataset: ``{"image": uint8 (3, H, W), "label": uint8 (H, W)}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from seg_core.data.checks import DataError
from seg_core.losses import IGNORE_INDEX
from seg_core.registry import DATASETS

MEAN_COLOUR = (124, 116, 104)  # round(255 * ImageNet mean): zero after normalisation

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


class VOCSegmentation(Dataset):
    """VOC 2012 images and palette label maps with the paper's padding/cropping."""

    class_names = VOC_CLASSES
    num_classes = len(VOC_CLASSES)

    def __init__(
        self,
        *,
        root: str,
        split: str,
        crop_size: int = 512,
        train: bool | None = None,
        label_dir: str = "SegmentationClass",
    ) -> None:
        import torchvision

        base = Path(root) / "VOCdevkit" / "VOC2012"
        list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.exists():
            raise FileNotFoundError(
                f"VOC split list not found: {list_file} (set data.root to the folder holding VOCdevkit)"
            )
        if not (base / label_dir).is_dir():
            raise FileNotFoundError(f"VOC label folder not found: {base / label_dir} (data.label_dir)")
        image_set = split if split in ("train", "val", "trainval") and label_dir == "SegmentationClass" else None
        if image_set is not None:
            self._voc = torchvision.datasets.VOCSegmentation(root, year="2012", image_set=image_set, download=False)
            self._pairs = list(zip(self._voc.images, self._voc.masks))
        else:
            names = list_file.read_text().split()
            self._pairs = [(str(base / "JPEGImages" / f"{n}.jpg"), str(base / label_dir / f"{n}.png")) for n in names]
        self.crop_size = crop_size
        self.train = split.startswith("train") if train is None else train

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Item ``index`` without augmentation (evaluation): padded to ``crop_size``."""
        return self.get(index, None)

    def get(self, index: int, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Item ``index``; for a training split with a ``generator``, a random horizontal flip and
        a random crop drawn from it (the engine seeds one per sample and step). Image and label
        are loaded, flipped and cropped together."""
        from PIL import Image

        image_path, label_path = self._pairs[index]
        image = torch.from_numpy(np.array(Image.open(image_path).convert("RGB"))).permute(2, 0, 1).contiguous()
        label = torch.from_numpy(np.array(Image.open(label_path)))  # palette indices; 255 = void outline
        augment = self.train and generator is not None
        if augment and bool(torch.rand((), generator=generator) < 0.5):
            image, label = image.flip(-1), label.flip(-1)
        image, label = self._pad(image, label)
        if augment:
            image, label = self._random_crop(image, label, generator)
        else:
            image, label = image[:, : self.crop_size, : self.crop_size], label[: self.crop_size, : self.crop_size]
        return {"image": image, "label": label}

    def _pad(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = label.shape
        ph, pw = max(0, self.crop_size - h), max(0, self.crop_size - w)
        if ph or pw:
            image = torch.stack([F.pad(c, (0, pw, 0, ph), value=v) for c, v in zip(image, MEAN_COLOUR)])
            label = F.pad(label, (0, pw, 0, ph), value=IGNORE_INDEX)
        return image, label

    def _random_crop(
        self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = label.shape
        top = int(torch.randint(0, h - self.crop_size + 1, (), generator=generator))
        left = int(torch.randint(0, w - self.crop_size + 1, (), generator=generator))
        sl = (slice(top, top + self.crop_size), slice(left, left + self.crop_size))
        return image[(slice(None),) + sl], label[sl]


LAYOUT = """<root>/VOCdevkit/VOC2012/
    JPEGImages/<name>.jpg
    SegmentationClass/<name>.png           (or label_dir, e.g. SegmentationClassAug for train_aug)
    ImageSets/Segmentation/<split>.txt     (one image name per line)"""
HOW_TO_GET = (
    "PASCAL VOC 2012 from the official site (VOCtrainval_11-May-2012.tar), extracted so that VOCdevkit is "
    "in <root>; the SBD augmentation (train_aug) as SegmentationClassAug and its list"
)


def verify_voc(options: dict, splits: list[str]) -> None:
    """Check a VOC root before any training: the layout, each split's list, and every listed
    image and label (present, same size, a palette or grey label with values in the classes or
    255). Raises :class:`DataError` naming the path and what is wrong."""
    from PIL import Image

    root = Path(options["root"])
    base = root / "VOCdevkit" / "VOC2012"
    label_dir = options.get("label_dir", "SegmentationClass")
    if not base.is_dir():
        raise DataError(root, f"no VOCdevkit/VOC2012 here; expected the layout\n{LAYOUT}\nGet {HOW_TO_GET}.")
    for folder in ("JPEGImages", label_dir, "ImageSets/Segmentation"):
        if not (base / folder).is_dir():
            raise DataError(base / folder, f"missing folder; expected the layout\n{LAYOUT}")
    allowed = set(range(len(VOC_CLASSES))) | {IGNORE_INDEX}
    for split in splits:
        list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            raise DataError(list_file, f"missing split list (one image name per line); expected the layout\n{LAYOUT}")
        names = list_file.read_text().split()
        if not names:
            raise DataError(list_file, "the split list is empty")
        for name in names:
            image, label = base / "JPEGImages" / f"{name}.jpg", base / label_dir / f"{name}.png"
            for path in (image, label):
                if not path.is_file():
                    raise DataError(path, f"missing (listed in {list_file.name})")
            with Image.open(image) as im, Image.open(label) as lb:
                if lb.mode not in ("P", "L"):
                    raise DataError(
                        label, f"label image in mode {lb.mode}; expected class indices (palette 'P' or grey 'L')"
                    )
                if im.size != lb.size:
                    raise DataError(label, f"label is {lb.size[0]}x{lb.size[1]}, its image {im.size[0]}x{im.size[1]}")
                values = set(np.unique(np.asarray(lb)).tolist())
            bad = sorted(values - allowed)
            if bad:
                raise DataError(
                    label, f"label value(s) {bad} outside the {len(VOC_CLASSES)} classes and {IGNORE_INDEX} (void)"
                )


@DATASETS.register(
    "voc2012",
    class_names=VOC_CLASSES,
    input_size=lambda options: (options.get("crop_size", 512),) * 2,
    verify=verify_voc,
)
def voc2012(
    *,
    split: str,
    num_images: int | None = None,
    root: str,
    crop_size: int = 512,
    seed: int = 0,
    label_dir: str = "SegmentationClass",
) -> VOCSegmentation:
    """VOC 2012 (``split`` = a list in ImageSets/Segmentation, e.g. ``train_aug`` or ``val``).

    ``num_images`` is accepted for interface parity with the synthetic set and ignored unless
    smaller than the split, in which case the first ``num_images`` items are used.
    """
    del seed  # augmentation is seeded per sample by the engine; data.seed is for generated datasets
    dataset = VOCSegmentation(root=root, split=split, crop_size=crop_size, label_dir=label_dir)
    if num_images is not None and num_images < len(dataset):
        dataset._pairs = dataset._pairs[:num_images]
    return dataset
