"""The embedded synthetic dataset: textured shapes whose class is decided by global shape.

Built to make the mechanism of Large Kernel Matters testable on a CPU. Each image holds
1-3 objects of four shape classes (disk, square, equilateral triangle, cross) on a textured
background with clutter:

* **Texture is shared across classes, not with the background.** Every object and distractor
  draws its own texture — stripes, checkerboard or dots, random angle and period, two random
  colours — from one pool, independently of its class; the background is flat or smoothly
  undulating. Locally a pixel can tell *object or not* (localisation is local) but the inside
  of a disk looks exactly like the inside of a square: only a receptive field that reaches
  the outline (a corner, a straight edge, an arm of the cross) can classify it — the paper's
  classification-vs-localisation argument.
* **Objects of many sizes.** Radius is log-uniform in ``[radius_min, radius_max]`` (5-28 px
  in a 64 px image by default): the small ones can be classified by local evidence, the large
  ones' interiors cannot, which is the valid-receptive-field regime the paper argues about.
* **Clutter and occlusion.** Background-class distractors (elongated ellipses and bars,
  wearing object textures) are drawn before the objects: object-like stuff that is not one of
  the classes, told apart by shape only; thin background-class occluder bars are drawn over them. Objects occlude each
  other in drawing order.
* **Sensor noise.** Gaussian noise (std ``noise_std`` grey levels) on the uint8 image.

Labels: 0 = background, 1-4 = disk, square, triangle, cross. Images are uint8 RGB (the raw
form later models need, e.g. CRF and Canny); normalisation happens in the engine.

Splits: ``pretrain`` (the mini scale's backbone pretraining), ``train`` (training; a run can hold
out the images that follow its ``train_images`` in this stream, for choices of schedule and
hyperparameters), ``val`` (the numbers the report shows) and ``test`` (reserved, unused).

Determinism: images are generated in chunks of :data:`CHUNK` with a generator seeded from
``(seed, split, chunk index)`` only, so image ``i`` is the same whatever ``num_images`` is, and
splits never share images (``pretrain`` is the split the mini scale pretrains its backbone on).
"""

from __future__ import annotations

import copy
import hashlib
import math
import typing
from dataclasses import dataclass, fields

import torch
from torch.utils.data import Dataset

from seg_core.registry import DATASETS, ConfigError

CHUNK = 256
SHAPES = ("disk", "square", "triangle", "cross")
SPLITS = ("train", "val", "test", "pretrain")
NUM_CLASSES = 1 + len(SHAPES)


@dataclass(frozen=True)
class ShapesConfig:
    """Knobs of the generator (all sizes in pixels)."""

    size: int = 64  # image side
    radius_min: float = 5.0  # object radius range (log-uniform)
    radius_max: float = 28.0
    objects_min: int = 1  # objects per image (uniform)
    objects_max: int = 3
    distractors_max: int = 3  # background clutter before objects: 0..max per image
    occluders_max: int = 1  # thin background bars over objects: 0..max per image
    period_min: float = 3.0  # texture period range
    period_max: float = 8.0
    noise_std: float = 8.0  # Gaussian noise, grey levels

    def __post_init__(self) -> None:
        checks = [
            ("size", self.size >= 8, f"must be >= 8, got {self.size}"),
            (
                "radius_min",
                0 < self.radius_min <= self.radius_max,
                f"need 0 < radius_min <= radius_max, got {self.radius_min}, {self.radius_max}",
            ),
            (
                "objects_min",
                0 <= self.objects_min <= self.objects_max and self.objects_max >= 1,
                f"need 0 <= objects_min <= objects_max, objects_max >= 1; got {self.objects_min}, {self.objects_max}",
            ),
            ("distractors_max", self.distractors_max >= 0, f"must be >= 0, got {self.distractors_max}"),
            ("occluders_max", self.occluders_max >= 0, f"must be >= 0, got {self.occluders_max}"),
            (
                "period_min",
                0 < self.period_min <= self.period_max,
                f"need 0 < period_min <= period_max, got {self.period_min}, {self.period_max}",
            ),
            ("noise_std", self.noise_std >= 0, f"must be >= 0, got {self.noise_std}"),
        ]
        for key, ok, message in checks:
            if not ok:
                raise ConfigError(key, message)


def _chunk_generator(seed: int, split: str, chunk: int) -> torch.Generator:
    digest = hashlib.sha256(f"shapes/{seed}/{split}/{chunk}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class _Sampler:
    """Draws per-image parameters for a chunk from one generator, in a fixed order."""

    def __init__(self, g: torch.Generator, n: int) -> None:
        self.g, self.n = g, n

    def uniform(self, lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(self.n, *shape, generator=self.g)

    def log_uniform(self, lo: float, hi: float) -> torch.Tensor:
        return torch.exp(self.uniform(math.log(lo), math.log(hi)))

    def integers(self, lo: int, hi_inclusive: int) -> torch.Tensor:
        return torch.randint(lo, hi_inclusive + 1, (self.n,), generator=self.g)


def _local_coords(grid_y, grid_x, cy, cx, angle):
    dy = grid_y[None] - cy[:, None, None]
    dx = grid_x[None] - cx[:, None, None]
    c, s = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    return dx * c + dy * s, -dx * s + dy * c


def _texture(sample: _Sampler, cfg: ShapesConfig, grid_y, grid_x, background: bool = False) -> torch.Tensor:
    """(n, 3, H, W) float image of one random texture per image.

    Object textures (objects and distractors): stripes, checkerboard or dots, period in
    ``[period_min, period_max]``, two independent random colours. Background textures: flat or
    a smooth low-contrast undulation (period 16-48 px). The two families differ locally (that
    is what makes localisation local); within the object family nothing depends on the class.
    """
    kind = sample.integers(0, 2)  # object: stripes, checker, dots; background: flat, smooth
    angle = sample.uniform(0.0, math.pi)
    period = sample.uniform(cfg.period_min, cfg.period_max)[:, None, None]
    slow_period = sample.uniform(16.0, 48.0)[:, None, None]
    phase = sample.uniform(0.0, 2 * math.pi)[:, None, None]
    color_a = sample.uniform(0.0, 255.0, 3)
    offset = sample.uniform(-40.0, 40.0, 3)
    # Both candidate second colours are drawn either way, so the random stream has one layout.
    color_b = torch.where(torch.tensor(background), (color_a + offset).clamp(0, 255), sample.uniform(0.0, 255.0, 3))
    zero = torch.zeros(sample.n)
    u, v = _local_coords(grid_y, grid_x, zero, zero, angle)
    if background:
        smooth = 0.5 + 0.5 * torch.sin(2 * math.pi * u / slow_period + phase) * torch.cos(2 * math.pi * v / slow_period)
        patterns = torch.stack([torch.zeros_like(smooth), smooth, smooth])
    else:
        su = torch.sin(2 * math.pi * u / period + phase)
        sv = torch.sin(2 * math.pi * v / period + phase)
        patterns = torch.stack([(su > 0).float(), (su * sv > 0).float(), ((su + sv) > 1.0).float()])
    pattern = patterns[kind, torch.arange(sample.n)][:, None]
    return color_a[:, :, None, None] * (1 - pattern) + color_b[:, :, None, None] * pattern


def _shape_mask(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Masks of the four classes in local coordinates; ``kind`` picks one per image."""
    r = r[:, None, None]
    disk = u**2 + v**2 <= r**2
    square = torch.maximum(u.abs(), v.abs()) <= 0.85 * r
    big_r = 1.25 * r  # circumradius of the triangle
    tri = torch.ones_like(disk)
    for phi in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3):
        tri &= u * math.cos(phi) + v * math.sin(phi) <= big_r / 2
    arm, half_w = 1.1 * r, 0.35 * r
    cross = ((u.abs() <= arm) & (v.abs() <= half_w)) | ((v.abs() <= arm) & (u.abs() <= half_w))
    masks = torch.stack([disk, square, tri, cross])
    return masks[kind, torch.arange(kind.numel())]


def _clutter_mask(sample: _Sampler, cfg: ShapesConfig, grid_y, grid_x, thin: bool) -> torch.Tensor:
    cy = sample.uniform(0.0, cfg.size)
    cx = sample.uniform(0.0, cfg.size)
    angle = sample.uniform(0.0, math.pi)
    u, v = _local_coords(grid_y, grid_x, cy, cx, angle)
    if thin:  # occluder bar
        half_len = sample.uniform(0.3, 1.0)[:, None, None] * cfg.size / 2
        half_w = sample.uniform(0.75, 1.5)[:, None, None]
        return (u.abs() <= half_len) & (v.abs() <= half_w)
    is_bar = sample.integers(0, 1).bool()[:, None, None]
    a = sample.uniform(0.1, 0.35)[:, None, None] * cfg.size
    aspect = sample.uniform(3.0, 6.0)[:, None, None]
    b = torch.clamp(a / aspect, min=1.5)
    ellipse = (u / a) ** 2 + (v / b) ** 2 <= 1
    bar = (u.abs() <= a) & (v.abs() <= b / 2 + 0.75)
    return torch.where(is_bar, bar, ellipse)


def generate_chunk(cfg: ShapesConfig, seed: int, split: str, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of :data:`CHUNK` images: uint8 images (n, 3, H, W), uint8 labels (n, H, W)."""
    n = CHUNK
    g = _chunk_generator(seed, split, chunk)
    sample = _Sampler(g, n)
    coords = torch.arange(cfg.size, dtype=torch.float32) + 0.5
    grid_y, grid_x = torch.meshgrid(coords, coords, indexing="ij")

    image = _texture(sample, cfg, grid_y, grid_x, background=True)
    label = torch.zeros(n, cfg.size, cfg.size, dtype=torch.uint8)

    def paint(mask: torch.Tensor, cls: torch.Tensor | int, present: torch.Tensor) -> None:
        texture = _texture(sample, cfg, grid_y, grid_x)
        mask = mask & present[:, None, None]
        image.copy_(torch.where(mask[:, None], texture, image))
        label.copy_(torch.where(mask, torch.as_tensor(cls, dtype=torch.uint8).reshape(-1, 1, 1), label))

    n_distractors = sample.integers(0, cfg.distractors_max)
    for j in range(cfg.distractors_max):
        paint(_clutter_mask(sample, cfg, grid_y, grid_x, thin=False), 0, j < n_distractors)

    n_objects = sample.integers(cfg.objects_min, cfg.objects_max)
    for j in range(cfg.objects_max):
        kind = sample.integers(0, len(SHAPES) - 1)
        radius = sample.log_uniform(cfg.radius_min, cfg.radius_max)
        cy = sample.uniform(0.0, cfg.size)
        cx = sample.uniform(0.0, cfg.size)
        angle = sample.uniform(0.0, 2 * math.pi)
        u, v = _local_coords(grid_y, grid_x, cy, cx, angle)
        paint(_shape_mask(kind, u, v, radius), kind + 1, j < n_objects)

    n_occluders = sample.integers(0, cfg.occluders_max)
    for j in range(cfg.occluders_max):
        paint(_clutter_mask(sample, cfg, grid_y, grid_x, thin=True), 0, j < n_occluders)

    noise = cfg.noise_std * torch.randn(image.shape, generator=g)
    return (image + noise).round().clamp(0, 255).to(torch.uint8), label


class SyntheticShapes(Dataset):
    """``num_images`` images of a split, generated eagerly and kept in memory as tensors.

    Items are dicts ``{"image": uint8 (3, H, W), "label": uint8 (H, W)}``; ``images`` and
    ``labels`` hold the whole split.
    """

    class_names = ("background",) + SHAPES
    num_classes = NUM_CLASSES

    def __init__(self, *, split: str, num_images: int, seed: int = 0, config: ShapesConfig | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        self.config = config or ShapesConfig()
        self.split, self.seed = split, seed
        chunks = [generate_chunk(self.config, seed, split, c) for c in range((num_images + CHUNK - 1) // CHUNK)]
        self.images = torch.cat([c[0] for c in chunks])[:num_images]
        self.labels = torch.cat([c[1] for c in chunks])[:num_images]

    def __len__(self) -> int:
        return len(self.images)

    def slice(self, start: int, stop: int) -> SyntheticShapes:
        """A view of images ``start..stop-1`` (shares memory; see :func:`seg_core.data.take`)."""
        view = copy.copy(self)
        view.images, view.labels = self.images[start:stop], self.labels[start:stop]
        return view

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "label": self.labels[index]}


SHAPES_KNOBS = tuple(f.name for f in fields(ShapesConfig))


def _check_knobs(options: dict) -> None:
    unknown = sorted(set(options) - set(SHAPES_KNOBS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown shapes option; known: {list(SHAPES_KNOBS)}")
    ShapesConfig(**options)


@DATASETS.register(
    "shapes",
    class_names=SyntheticShapes.class_names,
    options={name: (hint, False) for name, hint in typing.get_type_hints(ShapesConfig).items()},
    check=_check_knobs,
    input_size=lambda options: (options.get("size", ShapesConfig.size),) * 2,
)
def shapes(*, split: str, num_images: int, seed: int = 0, **knobs) -> SyntheticShapes:
    """The embedded dataset; ``knobs`` are :class:`ShapesConfig` fields."""
    _check_knobs(knobs)
    return SyntheticShapes(split=split, num_images=num_images, seed=seed, config=ShapesConfig(**knobs))
