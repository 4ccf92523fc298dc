"""Joint image/label augmentation of the paper-scale datasets (torchvision.transforms.v2).

Training, as DeepLab, PSPNet, ICNet and GCN train on VOC and Cityscapes: a random scale
(``scale_range``, both image and label: the image bilinearly, the label by sampling each output
pixel's centre, ``NEAREST_EXACT``, so the two stay aligned; torchvision's ``NEAREST`` takes input
pixel ``floor(j * in / out)``, half an output pixel off the image, and was used until issue 27),
a random crop of
``crop_size`` padded where the image is smaller (image with the mean colour, label with 255, which
every loss ignores), a random horizontal flip and, optionally, photometric jitter of the image.
Evaluation: the image as it is, padded to ``crop_size`` where it is smaller (the GCN protocol pads
VOC to 512 px so the top map is 16x16); padding is void, so it is neither scored nor a boundary.

Randomness comes from the ``torch.Generator`` the engine gives each sample and step (seeded from the
run's seed), so augmentation is redrawn every time a sample is used and does not depend on the
number of loader workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from seg_core.data.checks import DataError

IGNORE = 255
MEAN_COLOUR = (124, 116, 104)  # round(255 * ImageNet mean): zero after normalisation
LABEL_INTERPOLATION = v2.InterpolationMode.NEAREST_EXACT  # label cells sampled at their centres


class JointAugment:
    def __init__(
        self,
        crop_size: Sequence[int],
        scale_range: Sequence[float] = (0.5, 2.0),
        flip: bool = True,
        photometric: float = 0.0,
    ) -> None:
        self.crop = tuple(crop_size)
        self.scale_range = tuple(scale_range)
        self.flip = flip
        fill = {tv_tensors.Image: MEAN_COLOUR, tv_tensors.Mask: IGNORE}
        steps = [v2.RandomCrop(self.crop, pad_if_needed=True, fill=fill)]
        if flip:
            steps.append(v2.RandomHorizontalFlip())
        if photometric > 0:
            steps.append(v2.ColorJitter(brightness=photometric, contrast=photometric, saturation=photometric))
        self.rest = v2.Compose(steps)

    def train(
        self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 image (3, H, W), label (H, W)) -> augmented, cropped to ``crop_size``."""
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * float(torch.rand((), generator=generator))
        h, w = label.shape
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        img = tv_tensors.Image(v2.functional.resize(image, size, antialias=True))
        mask = tv_tensors.Mask(v2.functional.resize(label[None], size, interpolation=LABEL_INTERPOLATION)[0])
        with torch.random.fork_rng(devices=[]):  # the v2 transforms draw from the global generator: seed it per sample
            torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
            img, mask = self.rest(img, mask)
        return img.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)

    def evaluate(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole image, padded (bottom and right) to at least ``crop_size`` with void."""
        h, w = label.shape
        ph, pw = max(0, self.crop[0] - h), max(0, self.crop[1] - w)
        if not (ph or pw):
            return image, label
        padded = torch.stack([torch.nn.functional.pad(c, (0, pw, 0, ph), value=v) for c, v in zip(image, MEAN_COLOUR)])
        return padded, torch.nn.functional.pad(label, (0, pw, 0, ph), value=IGNORE)


def read_image(path: Path) -> torch.Tensor:
    """An image file as uint8 RGB (3, H, W)."""
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()


class LabelledImageFiles(Dataset):
    """(image file, label file) pairs read on demand: training items augmented from the engine's
    per-sample generator (:class:`JointAugment`), evaluation items whole (padded to the crop
    where smaller). Subclasses set ``_pairs``, ``train``, ``augment`` and ``read_label``."""

    _pairs: list[tuple[Path, Path]]
    train: bool
    pad_evaluation = True  # False: evaluation images as they are (Cityscapes: its crop is the training crop)
    augment: JointAugment
    read_label: Callable[[Path], torch.Tensor]

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Item ``index`` without augmentation (evaluation)."""
        return self.get(index, None)

    def get(self, index: int, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Item ``index``; a training split with a ``generator`` is augmented from it."""
        image_path, label_path = self._pairs[index]
        image, label = read_image(image_path), type(self).read_label(label_path)
        if tuple(image.shape[-2:]) != tuple(label.shape):
            raise DataError(
                label_path, f"label is {label.shape[1]}x{label.shape[0]}, its image {image.shape[2]}x{image.shape[1]}"
            )
        if self.train and generator is not None:
            image, label = self.augment.train(image, label, generator)
        elif self.pad_evaluation:
            image, label = self.augment.evaluate(image, label)
        return {"image": image, "label": label}
