"""``streets``: a synthetic street scene in perspective, for Gated-SCNN's claims (thin structures,
boundaries, small distant objects) at the mini scale.

Gated-SCNN reports its gains on thin classes (poles, signs, lights) and on small, distant objects
(its distance-based evaluation crops the image centre, where the vanishing point and the far
objects are). The ``shapes`` scenes have neither, so this generator draws, per image (1:2 like
Cityscapes, 128 x 256 by default):

* **large regions** in perspective: sky above a horizon (row ``horizon`` x height, uniform in
  ``horizon_min..horizon_max``), a road converging to a vanishing point near the image centre,
  a sidewalk on each side, buildings beyond the sidewalks and up to a skyline;
* **thin structures**: poles standing on the sidewalks (vertical, ``pole_width`` px wide at the
  bottom of the image, thinner with distance, at least 1 px; 0..``poles_max`` per image) and
  fences (horizontal bars along the sidewalk, 1-3 px tall; 0..``fences_max``);
* **small objects whose size shrinks with distance**: cars on the road and persons on the
  sidewalks, 0..``cars_max`` / ``persons_max`` each, their size proportional to their distance
  below the horizon, so far ones are a few pixels near the centre and near ones large at the
  bottom (cropping the centre enlarges the far ones, as Gated-SCNN's crop evaluation intends).

Every region wears a texture of its class's colour family with random variation (buildings:
window grids), cars and persons a random colour each: colour says something about the class, but
region borders and thin structures must be found from edges and shape. Sensor noise on top
(``noise_std``). Labels: the class index (0 road ... 7 person). Deterministic per (seed, split,
chunk), like ``shapes``: image ``i`` does not depend on how many images are generated.

None of these knobs is tuned toward the paper's numbers; tests pin the scene statistics
(class fractions, pole widths, the size-distance relation).
"""

from __future__ import annotations

import copy
import hashlib
import typing
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch.utils.data import Dataset

from seg_core.data.synthetic import SPLITS
from seg_core.metrics import ConfusionMatrix, summarize
from seg_core.registry import DATASETS, METRIC_FAMILIES, ConfigError

CLASSES = ("road", "sidewalk", "building", "sky", "pole", "fence", "car", "person")
ROAD, SIDEWALK, BUILDING, SKY, POLE, FENCE, CAR, PERSON = range(len(CLASSES))
CHUNK = 64
BASE_COLOURS = {  # RGB centres of each class's colour family; each region varies around its centre
    ROAD: (90, 90, 95),
    SIDEWALK: (165, 155, 140),
    BUILDING: (140, 110, 90),
    SKY: (120, 170, 225),
    POLE: (60, 60, 60),
    FENCE: (150, 120, 60),
}


@dataclass(frozen=True)
class StreetsConfig:
    """Knobs of the generator (sizes in pixels of the full image)."""

    height: int = 128
    width: int = 256
    horizon_min: float = 0.35  # the horizon's row, as a fraction of the height
    horizon_max: float = 0.5
    poles_max: int = 4
    pole_width: float = 4.0  # at the bottom row; thinner with distance, at least 1 px
    fences_max: int = 2
    cars_max: int = 4
    persons_max: int = 4
    noise_std: float = 6.0

    def __post_init__(self) -> None:
        checks = [
            ("height", self.height >= 16, f"must be >= 16, got {self.height}"),
            ("width", self.width >= 16, f"must be >= 16, got {self.width}"),
            ("horizon_min", 0.1 <= self.horizon_min <= self.horizon_max <= 0.8, "need 0.1 <= horizon_min <= horizon_max <= 0.8"),
            ("pole_width", self.pole_width >= 1, f"must be >= 1, got {self.pole_width}"),
            ("noise_std", self.noise_std >= 0, f"must be >= 0, got {self.noise_std}"),
        ]  # fmt: skip
        checks += [(k, getattr(self, k) >= 0, f"must be >= 0, got {getattr(self, k)}") for k in
                   ("poles_max", "fences_max", "cars_max", "persons_max")]  # fmt: skip
        for key, ok, message in checks:
            if not ok:
                raise ConfigError(key, message)


def _rng(seed: int, split: str, chunk: int) -> np.random.Generator:
    digest = hashlib.sha256(f"streets/{seed}/{split}/{chunk}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _scene(cfg: StreetsConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = cfg.height, cfg.width
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    horizon = h * rng.uniform(cfg.horizon_min, cfg.horizon_max)
    vanish = w * rng.uniform(0.4, 0.6)
    depth = np.clip((ys - horizon) / (h - horizon), 0, None)  # 0 at the horizon, 1 at the bottom row
    road_half = depth * w * rng.uniform(0.35, 0.55)
    walk = depth * w * rng.uniform(0.12, 0.22)
    dx = xs - vanish
    label = np.full((h, w), BUILDING, dtype=np.uint8)
    skyline = horizon - h * rng.uniform(0.05, 0.3, size=2)  # left and right buildings' tops
    top = np.where(xs < vanish, skyline[0], skyline[1])
    top = np.where(np.abs(dx) < w * rng.uniform(0.08, 0.2), horizon, top)  # open sky down the street
    label[ys < top] = SKY
    label[(ys >= horizon) & (np.abs(dx) <= road_half + walk)] = SIDEWALK
    label[(ys >= horizon) & (np.abs(dx) <= road_half)] = ROAD

    image = np.empty((h, w, 3), dtype=np.float32)
    for cls, centre in BASE_COLOURS.items():
        colour = np.clip(np.array(centre) + rng.normal(0, 18, 3), 0, 255)
        image[label == cls] = colour
    windows = ((xs % rng.uniform(6, 12)) < 3) & ((ys % rng.uniform(6, 12)) < 3)  # window grids on buildings
    image[(label == BUILDING) & windows] *= rng.uniform(0.4, 0.7)
    image[label == SKY] += (ys[label == SKY, None] / h) * 40  # a vertical sky gradient

    def paint(mask: np.ndarray, cls: int, colour: np.ndarray) -> None:
        label[mask] = cls
        image[mask] = colour

    for _ in range(rng.integers(0, cfg.fences_max + 1)):  # fences: horizontal bars along a sidewalk
        row = rng.uniform(horizon + 2, h - 2)
        d = (row - horizon) / (h - horizon)
        side = rng.choice([-1, 1])
        x0 = vanish + side * (d * w * 0.45)
        length = rng.uniform(0.15, 0.4) * w * d + 4
        thickness = max(1.0, 3 * d)
        xa, xb = sorted((x0, x0 + side * length))
        paint((np.abs(ys - row) <= thickness / 2) & (xs >= xa) & (xs <= xb), FENCE,
              np.clip(np.array(BASE_COLOURS[FENCE]) + rng.normal(0, 18, 3), 0, 255))  # fmt: skip
    objects = [(CAR, rng.uniform(0.05, 1.0) ** 1.5) for _ in range(rng.integers(0, cfg.cars_max + 1))]
    objects += [(PERSON, rng.uniform(0.05, 1.0) ** 1.5) for _ in range(rng.integers(0, cfg.persons_max + 1))]
    for kind, d in sorted(objects, key=lambda o: o[1]):  # far before near (more far ones: d = u^1.5)
        base = horizon + d * (h - horizon)
        colour = rng.uniform(0, 255, 3)
        if kind == CAR:
            width = d * w * rng.uniform(0.12, 0.2) + 1
            cx = vanish + rng.uniform(-0.8, 0.8) * (base - horizon) / (h - horizon) * w * 0.4
            body = (np.abs(xs - cx) <= width / 2) & (ys <= base) & (ys >= base - 0.45 * width)
            cabin = (np.abs(xs - cx) <= width / 3) & (ys < base - 0.45 * width) & (ys >= base - 0.7 * width)
            mask = body | cabin
        else:
            tall = d * h * rng.uniform(0.25, 0.4) + 2
            side = rng.choice([-1, 1])
            cx = vanish + side * (d * w * rng.uniform(0.45, 0.6))
            body = (np.abs(xs - cx) <= tall / 8 + 0.3) & (ys <= base) & (ys >= base - 0.8 * tall)
            head = (xs - cx) ** 2 + (ys - (base - 0.88 * tall)) ** 2 <= (tall / 9 + 0.3) ** 2
            mask = body | head
        paint(mask, kind, colour)
    for _ in range(rng.integers(0, cfg.poles_max + 1)):  # poles last: thin, in front of everything
        d = rng.uniform(0.1, 1.0)
        base = horizon + d * (h - horizon)
        side = rng.choice([-1, 1])
        x = vanish + side * d * w * rng.uniform(0.45, 0.7)
        width = max(1.0, cfg.pole_width * d)
        height = d * h * rng.uniform(0.6, 1.0) + 3
        mask = (np.abs(xs - x) <= width / 2) & (ys <= base) & (ys >= base - height)
        paint(mask, POLE, np.clip(np.array(BASE_COLOURS[POLE]) + rng.normal(0, 12, 3), 0, 255))
    image += rng.normal(0, cfg.noise_std, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8).transpose(2, 0, 1), label


class SyntheticStreets(Dataset):
    """``num_images`` street scenes of a split, generated eagerly into ``images`` / ``labels``."""

    class_names = CLASSES
    num_classes = len(CLASSES)

    def __init__(self, *, split: str, num_images: int, seed: int = 0, config: StreetsConfig | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        self.config = config or StreetsConfig()
        images, labels = [], []
        for chunk in range((num_images + CHUNK - 1) // CHUNK):
            rng = _rng(seed, split, chunk)
            for _ in range(CHUNK):
                image, label = _scene(self.config, rng)
                images.append(image)
                labels.append(label)
        self.images = torch.from_numpy(np.stack(images[:num_images]))
        self.labels = torch.from_numpy(np.stack(labels[:num_images]))

    def __len__(self) -> int:
        return len(self.images)

    def slice(self, start: int, stop: int) -> SyntheticStreets:
        view = copy.copy(self)
        view.images, view.labels = self.images[start:stop], self.labels[start:stop]
        return view

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "label": self.labels[index]}


STREETS_KNOBS = tuple(f.name for f in fields(StreetsConfig))


def _check_knobs(options: dict) -> None:
    unknown = sorted(set(options) - set(STREETS_KNOBS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown streets option; known: {list(STREETS_KNOBS)}")
    StreetsConfig(**options)


@DATASETS.register(
    "streets",
    class_names=CLASSES,
    options={name: (hint, False) for name, hint in typing.get_type_hints(StreetsConfig).items()},
    check=_check_knobs,
    input_size=lambda options: (options.get("height", StreetsConfig.height), options.get("width", StreetsConfig.width)),
)
def streets(*, split: str, num_images: int, seed: int = 0, **knobs) -> SyntheticStreets:
    """Synthetic street scenes; ``knobs`` are :class:`StreetsConfig` fields."""
    _check_knobs(knobs)
    return SyntheticStreets(split=split, num_images=num_images, seed=seed, config=StreetsConfig(**knobs))


GROUPS = {"large": (ROAD, SIDEWALK, BUILDING, SKY), "thin": (POLE, FENCE), "small": (CAR, PERSON)}


class StreetsGroups:
    """mIoU over the large regions, the thin structures and the small objects of ``streets``
    (``large_miou``, ``thin_miou``, ``small_miou``): where a gain lands (Gated-SCNN's claim that
    its gain concentrates on thin and small classes). IoU per class from one confusion matrix;
    a group's mIoU is the mean over its classes."""

    def __init__(self, num_classes: int) -> None:
        if num_classes != len(CLASSES):
            raise ConfigError(
                "eval.metrics", f"streets_groups reads the {len(CLASSES)} streets classes, got {num_classes}"
            )
        self.matrix = ConfusionMatrix(num_classes)

    def update(self, pred: torch.Tensor, batch: dict) -> None:
        self.matrix.update(pred.cpu(), batch["label"].cpu())

    def reduce(self, shard) -> None:
        shard.all_reduce_(self.matrix.matrix)

    def summary(self) -> dict[str, float]:
        iou = summarize(self.matrix.matrix)["per_class_iou"]
        out = {}
        for group, members in GROUPS.items():
            values = [iou[c] for c in members if iou[c] is not None]
            out[f"{group}_miou"] = float(np.mean(values)) if values else float("nan")
        return out


METRIC_FAMILIES.register("streets_groups", metrics=tuple(f"{g}_miou" for g in GROUPS))(StreetsGroups)
