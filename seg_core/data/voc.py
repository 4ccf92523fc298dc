"""PASCAL VOC 2012 with the SBD augmentation, for the paper scale (read from a local root; never
downloaded by the suite).

Layout under ``root`` (what torchvision's ``VOCSegmentation`` and ``SBDataset`` read)::

    VOCdevkit/VOC2012/JPEGImages/<name>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<name>.png       (palette or grey label images, 255 = void)
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
    SBD/{img,cls}/<name>.{jpg,mat}, SBD/{train,val}.txt  (the SBD benchmark's dataset/ folder)

``train_aug`` (10,582 images in the full datasets) is VOC train plus SBD train and val, minus
VOC val; its labels are VOC's where VOC has one, else SBD's ``.mat`` labels converted once to PNG
(scipy, through torchvision's ``SBDataset``) into ``label_cache`` (default
``<root>/segbench-cache/SegmentationClassAug``), each file named by its source's size and
modification time, so that an edited ``.mat`` is converted again (and its values checked, an
error naming the ``.mat``). A list file ``train_aug.txt`` with a label folder
(``label_dir``, e.g. a ready-made ``SegmentationClassAug``) is used instead when it exists.

The run's ``train`` split reads ``train_list`` (default ``train_aug``), its ``val`` split
``val_list`` (``val``). Training items are augmented (:class:`~seg_core.data.augment.JointAugment`:
random scale, crop with void padding, flip); evaluation items are whole images padded to
``crop_size`` (the GCN protocol: 512 px, a 16x16 top map at stride 32). Label values outside the
21 classes and 255 are an error naming the file, never remapped. :func:`verify_voc` checks a root
before any training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from seg_core.data.augment import IGNORE, JointAugment, LabelledImageFiles
from seg_core.data.checks import DataError, decoded_image
from seg_core.registry import DATASETS

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
ALLOWED = frozenset(range(len(VOC_CLASSES))) | {IGNORE}
LAYOUT = """<root>/VOCdevkit/VOC2012/JPEGImages/<name>.jpg
<root>/VOCdevkit/VOC2012/SegmentationClass/<name>.png
<root>/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
<root>/SBD/{img,cls}/<name>.{jpg,mat} and <root>/SBD/{train,val}.txt   (for train_aug)"""
HOW_TO_GET = (
    "PASCAL VOC 2012 (VOCtrainval_11-May-2012.tar from the PASCAL VOC site) extracted in <root>, and the SBD "
    "benchmark (benchmark.tgz, 'Semantic Boundaries Dataset') with its dataset/ folder as <root>/SBD"
)


def read_label(path: Path) -> torch.Tensor:
    """A label image as class indices; a colour (RGB) label or an unknown value is an error."""
    with decoded_image(path, "label image") as im:
        if im.mode not in ("P", "L"):
            raise DataError(path, f"label image in mode {im.mode}; expected class indices (palette 'P' or grey 'L')")
        label = np.array(im)
    bad = sorted(set(np.unique(label).tolist()) - ALLOWED)
    if bad:
        raise DataError(path, f"label value(s) {bad} outside the {len(VOC_CLASSES)} classes and {IGNORE} (void)")
    return torch.from_numpy(label)


def _names(list_file: Path) -> list[str]:
    return list_file.read_text().split()


def train_aug_pairs(root: Path, label_dir: str, label_cache: Path) -> list[tuple[Path, Path]]:
    """VOC train + SBD train + SBD val - VOC val, with SBD's labels converted to PNG once."""
    import torchvision
    from PIL import Image

    base = root / "VOCdevkit" / "VOC2012"
    lists = base / "ImageSets" / "Segmentation"
    val = set(_names(lists / "val.txt"))
    voc_train = _names(lists / "train.txt")
    sbd = torchvision.datasets.SBDataset(str(root / "SBD"), image_set="train", mode="segmentation")
    sbd_names = [Path(p).stem for p in sbd.images]
    sbd_names += [n for n in _names(root / "SBD" / "val.txt") if n not in set(sbd_names)]
    pairs, seen = [], set()
    for name in voc_train + sbd_names:
        if name in val or name in seen:
            continue
        seen.add(name)
        voc_label = base / label_dir / f"{name}.png"
        if voc_label.is_file():
            pairs.append((base / "JPEGImages" / f"{name}.jpg", voc_label))
            continue
        mat = root / "SBD" / "cls" / f"{name}.mat"
        if not mat.is_file():
            raise DataError(mat, "missing (listed in SBD's train.txt or val.txt)")
        source = mat.stat()  # the cache is keyed on its source: an edited .mat is converted again
        cached = label_cache / f"{name}--{source.st_size}-{source.st_mtime_ns}.png"
        if not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            target = np.asarray(_sbd_label(sbd, mat))
            bad = sorted(set(np.unique(target).tolist()) - ALLOWED)
            if bad:
                raise DataError(mat, f"label value(s) {bad} outside the {len(VOC_CLASSES)} classes and {IGNORE} (void)")
            for older in label_cache.glob(f"{name}--*.png"):  # conversions of an earlier version
                older.unlink(missing_ok=True)
            tmp = cached.with_suffix(".png.tmp")
            Image.fromarray(target.astype(np.uint8), mode="L").save(tmp, format="PNG")
            tmp.replace(cached)
        image = base / "JPEGImages" / f"{name}.jpg"
        pairs.append((image if image.is_file() else root / "SBD" / "img" / f"{name}.jpg", cached))
    return pairs


def _sbd_label(sbd, mat: Path):
    """SBD's segmentation for one image, from its ``.mat`` (``GTcls.Segmentation``)."""
    try:
        return sbd._get_segmentation_target(str(mat))
    except Exception as e:  # noqa: BLE001  (not a .mat, no GTcls, a wrong struct: all unreadable)
        raise DataError(
            mat, f"not a readable SBD label (a .mat with GTcls.Segmentation): {type(e).__name__}: {e}"
        ) from None


class VOCSegmentation(LabelledImageFiles):
    """VOC 2012 (+SBD) images and labels with the paper's augmentation and evaluation padding."""

    class_names = VOC_CLASSES
    num_classes = len(VOC_CLASSES)
    read_label = staticmethod(read_label)

    def __init__(
        self,
        *,
        root: str,
        list_name: str,
        train: bool,
        crop_size: int,
        label_dir: str = "SegmentationClass",
        label_cache: str | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        photometric: float = 0.0,
    ) -> None:
        import torchvision

        self.root = Path(root)
        base = self.root / "VOCdevkit" / "VOC2012"
        if not base.is_dir():
            raise DataError(self.root, f"no VOCdevkit/VOC2012 here; expected the layout\n{LAYOUT}\nGet {HOW_TO_GET}.")
        list_file = base / "ImageSets" / "Segmentation" / f"{list_name}.txt"
        if list_name == "train_aug" and not list_file.is_file():
            cache = Path(label_cache) if label_cache else self.root / "segbench-cache" / "SegmentationClassAug"
            self._pairs = train_aug_pairs(self.root, label_dir, cache)
        elif list_name in ("train", "val", "trainval") and label_dir == "SegmentationClass":
            voc = torchvision.datasets.VOCSegmentation(str(self.root), year="2012", image_set=list_name, download=False)
            self._pairs = [(Path(i), Path(m)) for i, m in zip(voc.images, voc.masks)]
        else:
            self._pairs = [(base / "JPEGImages" / f"{n}.jpg", base / label_dir / f"{n}.png") for n in _names(list_file)]
        self.train = train
        self.augment = JointAugment((crop_size, crop_size), scale_range, flip=True, photometric=photometric)


def verify_voc(options: dict, splits: list[str]) -> None:
    """Check a VOC root before any training: the layout, each split's list, and every listed image
    and label (present, the same size, class indices within the classes and 255). Raises
    :class:`DataError` naming the path and what is wrong."""
    root = Path(options["root"])
    base = root / "VOCdevkit" / "VOC2012"
    if not base.is_dir():
        raise DataError(root, f"no VOCdevkit/VOC2012 here; expected the layout\n{LAYOUT}\nGet {HOW_TO_GET}.")
    label_dir = options.get("label_dir", "SegmentationClass")
    for folder in ("JPEGImages", label_dir, "ImageSets/Segmentation"):
        if not (base / folder).is_dir():
            raise DataError(base / folder, f"missing folder; expected the layout\n{LAYOUT}")
    for split in splits:
        name = options.get("train_list", "train_aug") if split == "train" else options.get("val_list", "val")
        list_file = base / "ImageSets" / "Segmentation" / f"{name}.txt"
        if name == "train_aug" and not list_file.is_file():
            if not (root / "SBD" / "cls").is_dir():
                raise DataError(
                    root / "SBD",
                    f"train_aug needs the SBD augmentation here (or a {list_file.name}); "
                    f"expected the layout\n{LAYOUT}\nGet {HOW_TO_GET}.",
                )
            for required in (
                base / "ImageSets" / "Segmentation" / "train.txt",
                base / "ImageSets" / "Segmentation" / "val.txt",
                root / "SBD" / "train.txt",
                root / "SBD" / "val.txt",
            ):
                if not required.is_file():
                    raise DataError(required, f"missing split list; expected the layout\n{LAYOUT}")
            dataset = _dataset(options, split)
        else:
            if not list_file.is_file():
                raise DataError(
                    list_file, f"missing split list (one image name per line); expected the layout\n{LAYOUT}"
                )
            dataset = _dataset(options, split)
        if len(dataset) == 0:
            raise DataError(list_file, "the split list is empty")

        # where a pair was listed: the list file, or the lists train_aug is built from when it has none
        listed = (
            list_file.name
            if list_file.is_file()
            else "train_aug, built from VOC's train.txt and SBD's train.txt and val.txt, minus VOC's val.txt"
        )
        for image, label in dataset._pairs:
            for path in (image, label):
                if not path.is_file():
                    raise DataError(path, f"missing (listed in {listed})")
            with decoded_image(image) as im, decoded_image(label, "label image") as lb:
                if im.size != lb.size and lb.mode in ("P", "L"):
                    raise DataError(label, f"label is {lb.size[0]}x{lb.size[1]}, its image {im.size[0]}x{im.size[1]}")
            read_label(label)


def _dataset(options: dict, split: str) -> VOCSegmentation:
    train = split == "train"
    return VOCSegmentation(
        root=options["root"],
        list_name=options.get("train_list", "train_aug") if train else options.get("val_list", "val"),
        train=train,
        crop_size=options.get("crop_size", 512),
        label_dir=options.get("label_dir", "SegmentationClass"),
        label_cache=options.get("label_cache"),
        scale_range=tuple(options.get("scale_range", (0.5, 2.0))),
        photometric=options.get("photometric", 0.0),
    )


@DATASETS.register(
    "voc2012",
    class_names=VOC_CLASSES,
    input_size=lambda options: (options.get("crop_size", 512),) * 2,
    eval_size=lambda options: (max(500, options.get("crop_size", 512)),) * 2,  # images are at most 500 px
    verify=verify_voc,
)
def voc2012(
    *,
    split: str,
    root: str,
    num_images: int | None = None,
    crop_size: int = 512,
    train_list: str = "train_aug",
    val_list: str = "val",
    label_dir: str = "SegmentationClass",
    label_cache: str | None = None,
    scale_range: list[float] | None = None,
    photometric: float = 0.0,
    seed: int = 0,
) -> VOCSegmentation:
    """VOC 2012 (+SBD): ``split`` is the run's ``train`` (``train_list``, augmented) or ``val``
    (``val_list``, whole images padded to ``crop_size``). ``num_images`` smaller than the list
    keeps its first images (a quick run); ``seed`` is unused (augmentation is seeded per sample)."""
    del seed
    options = {
        "root": root,
        "crop_size": crop_size,
        "train_list": train_list,
        "val_list": val_list,
        "label_dir": label_dir,
        "label_cache": label_cache,
        "scale_range": scale_range or (0.5, 2.0),
        "photometric": photometric,
    }
    dataset = _dataset(options, "train" if split == "train" else "val")
    if num_images is not None and num_images < len(dataset):
        dataset._pairs = dataset._pairs[:num_images]
    return dataset
