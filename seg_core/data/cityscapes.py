"""Cityscapes (fine annotations) for the paper scale, read from a local root (never downloaded).

Layout under ``root`` (what torchvision's ``Cityscapes`` reads)::

    leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png
    gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png

2,975 training and 500 validation images of 1024x2048. Labels are the 34 ``labelIds``, mapped to
the 19 evaluation classes (``trainIds``) with the official label table of ``cityscapesscripts``
(the optional extra ``paper``); ids the table maps to no class become 255 (void), and an id the
table does not know is an error naming the file. Training items are augmented
(:class:`~seg_core.data.augment.JointAugment`: random scale, crop, flip); evaluation items are the
full 1024x2048 images (sliding-window inference, ``eval.inference``, handles their size).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch

from seg_core.class_groups import GROUP_METRICS, ClassGroupMIoU
from seg_core.data.augment import IGNORE, JointAugment, LabelledImageFiles
from seg_core.data.checks import DataError, decoded_image
from seg_core.registry import DATASETS, METRIC_FAMILIES

LAYOUT = """<root>/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png
<root>/gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png"""
HOW_TO_GET = (
    "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from the Cityscapes site, both extracted in <root>"
)
INSTALL = 'the Cityscapes label table comes from cityscapesscripts: pip install "segbench[paper]"'


@cache
def label_table() -> tuple[tuple[str, ...], np.ndarray]:
    """(the 19 class names by trainId, a lookup from labelId to trainId or 255)."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError:
        raise DataError("cityscapesscripts", INSTALL) from None
    names = tuple(
        label.name for label in sorted((lb for lb in labels if 0 <= lb.trainId < IGNORE), key=lambda lb: lb.trainId)
    )
    lut = np.full(256, -1, dtype=np.int16)  # -1: an id the table does not know
    for label in labels:
        if label.id >= 0:
            lut[label.id] = label.trainId if 0 <= label.trainId < IGNORE else IGNORE
    return names, lut


CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)  # fmt: skip  (the trainId order of the official table; checked against it in the tests)

# Gated-SCNN's "thin and small classes" on Cityscapes (``eval.metrics = ["cityscapes_groups"]``):
# thin = poles and what is mounted on them, plus fences (the paper's largest per-class gains:
# pole, traffic light, traffic sign); small = the countable road users smaller than a truck;
# large = the stuff regions. Truck, bus and train are in no group. The streets groups of the mini
# scale (seg_core.data.streets) are the same kinds drawn from its eight classes.
CITYSCAPES_GROUPS = {
    "large": ("road", "sidewalk", "building", "wall", "vegetation", "terrain", "sky"),
    "thin": ("pole", "fence", "traffic light", "traffic sign"),
    "small": ("person", "rider", "car", "motorcycle", "bicycle"),
}


@METRIC_FAMILIES.register("cityscapes_groups", metrics=GROUP_METRICS)
def cityscapes_groups(*, num_classes: int) -> ClassGroupMIoU:
    """``large_miou``, ``thin_miou``, ``small_miou`` over :data:`CITYSCAPES_GROUPS`."""
    return ClassGroupMIoU(CITYSCAPES_CLASSES, CITYSCAPES_GROUPS, num_classes, family="cityscapes_groups")


def read_train_ids(path: Path) -> torch.Tensor:
    with decoded_image(path, "label image") as im:
        if im.mode not in ("P", "L"):
            raise DataError(path, f"label image in mode {im.mode}; expected labelIds (grey 'L')")
        ids = np.array(im)
    _, lut = label_table()
    mapped = lut[ids]
    if (mapped < 0).any():
        raise DataError(
            path, f"labelId(s) {sorted(set(ids[mapped < 0].tolist()))} are not in the Cityscapes label table"
        )
    return torch.from_numpy(mapped.astype(np.uint8))


class CityscapesFine(LabelledImageFiles):
    """Cityscapes fine images with their labels as trainIds; training items augmented."""

    class_names = CITYSCAPES_CLASSES
    num_classes = len(CITYSCAPES_CLASSES)
    read_label = staticmethod(read_train_ids)
    pad_evaluation = False  # every image is 1024x2048; crop_size is the training crop

    def __init__(
        self,
        *,
        root: str,
        split: str,
        train: bool,
        crop_size: tuple[int, int],
        scale_range: tuple[float, float] = (0.5, 2.0),
        photometric: float = 0.0,
    ) -> None:
        import torchvision

        data = torchvision.datasets.Cityscapes(root, split=split, mode="fine", target_type="semantic")
        # torchvision keeps one target path per target type: the one here is "semantic"
        self._pairs = [(Path(i), Path(t[0] if isinstance(t, list) else t)) for i, t in zip(data.images, data.targets)]
        self.train = train
        self.augment = JointAugment(crop_size, scale_range, flip=True, photometric=photometric)


def verify_cityscapes(options: dict, splits: list[str]) -> None:
    """Check a Cityscapes root before any training (layout, every image and label, label ids)."""

    root = Path(options["root"])
    label_table()  # the extra is there
    for split in splits:
        folder = "train" if split == "train" else "val"
        for sub in ("leftImg8bit", "gtFine"):
            if not (root / sub / folder).is_dir():
                raise DataError(
                    root / sub / folder, f"missing folder; expected the layout\n{LAYOUT}\nGet {HOW_TO_GET}."
                )
        for city in sorted(p for p in (root / "leftImg8bit" / folder).iterdir() if p.is_dir()):
            for stray in sorted(f for f in city.iterdir() if not f.name.endswith("_leftImg8bit.png")):
                raise DataError(
                    stray,
                    "not a Cityscapes image (*_leftImg8bit.png); the reader takes every file of a city folder: move it out",
                )
        images = sorted((root / "leftImg8bit" / folder).glob("*/*_leftImg8bit.png"))
        if not images:
            raise DataError(root / "leftImg8bit" / folder, "no *_leftImg8bit.png images")
        for image in images:
            label = (
                root
                / "gtFine"
                / folder
                / image.parent.name
                / image.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
            )
            if not label.is_file():
                raise DataError(label, f"missing (the label of {image.name})")
            with decoded_image(image) as im, decoded_image(label, "label image") as lb:
                if im.size != lb.size:
                    raise DataError(label, f"label is {lb.size[0]}x{lb.size[1]}, its image {im.size[0]}x{im.size[1]}")
            read_train_ids(label)


@DATASETS.register(
    "cityscapes",
    class_names=CITYSCAPES_CLASSES,
    input_size=lambda options: tuple(options.get("crop_size", [1024, 2048])),
    eval_size=lambda options: (1024, 2048),
    verify=verify_cityscapes,
)
def cityscapes(
    *,
    split: str,
    root: str,
    num_images: int | None = None,
    crop_size: list[int] | None = None,
    scale_range: list[float] | None = None,
    photometric: float = 0.0,
    seed: int = 0,
) -> CityscapesFine:
    """Cityscapes fine: the run's ``train`` split (2,975 images, augmented, ``crop_size`` [h, w]) or
    ``val`` (500 full 1024x2048 images)."""
    del seed
    train = split == "train"
    dataset = CityscapesFine(
        root=root,
        split="train" if train else "val",
        train=train,
        crop_size=tuple(crop_size or (1024, 2048)),
        scale_range=tuple(scale_range or (0.5, 2.0)),
        photometric=photometric,
    )
    if num_images is not None and num_images < len(dataset):
        dataset._pairs = dataset._pairs[:num_images]
    return dataset
