"""``shapes_flat``: the synthetic shapes with every object painted in one colour.

DeepLab's dense CRF (:mod:`seg_core.crf`) pulls label boundaries onto colour edges through its
bilateral kernel. In the ``shapes`` scenes objects wear two-colour textures (stripes, checks,
dots), so colour edges run through every object interior as well as along its outline, and the
mechanism has little to act on. ``shapes_flat`` renders the same scenes (same knobs, same objects,
same clutter and occluders; :class:`~seg_core.data.synthetic.SyntheticShapes`) and then repaints
each object, a connected region of one class, in one colour drawn at random, plus the same sensor
noise: its colour edges coincide with its boundary. Background clutter keeps its textures (colour
edges that are no boundary), and which class an object is still depends only on its shape (the
colour is drawn independently of the class). Deterministic per (seed, split) like ``shapes``.
"""

from __future__ import annotations

import hashlib
import typing

import numpy as np
import torch
from scipy import ndimage

from seg_core.data.synthetic import SHAPES_KNOBS, ShapesConfig, SyntheticShapes, _check_knobs
from seg_core.registry import DATASETS


def _generator(seed: int, split: str) -> np.random.Generator:
    digest = hashlib.sha256(f"shapes_flat/{seed}/{split}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def repaint(images: torch.Tensor, labels: torch.Tensor, noise_std: float, rng: np.random.Generator) -> torch.Tensor:
    """Each connected object region (4-connectivity, one class) in one random colour + noise."""
    out = images.numpy().copy()
    lab = labels.numpy()
    for n in range(len(out)):
        for cls in np.unique(lab[n]):
            if cls == 0:
                continue
            regions, count = ndimage.label(lab[n] == cls)
            for r in range(1, count + 1):
                mask = regions == r
                colour = rng.uniform(0, 255, size=3)
                noise = rng.normal(0, noise_std, size=(3, int(mask.sum())))
                out[n][:, mask] = np.clip(np.round(colour[:, None] + noise), 0, 255).astype(np.uint8)
    return torch.from_numpy(out)


class FlatShapes(SyntheticShapes):
    """The ``shapes`` scenes of a split with flat-coloured objects (see the module docstring)."""

    def __init__(self, *, split: str, num_images: int, seed: int = 0, config: ShapesConfig | None = None) -> None:
        super().__init__(split=split, num_images=num_images, seed=seed, config=config)
        self.images = repaint(self.images, self.labels, self.config.noise_std, _generator(seed, split))


@DATASETS.register(
    "shapes_flat",
    class_names=SyntheticShapes.class_names,
    options={name: (hint, False) for name, hint in typing.get_type_hints(ShapesConfig).items()},
    check=_check_knobs,
    input_size=lambda options: (options.get("size", ShapesConfig.size),) * 2,
)
def shapes_flat(*, split: str, num_images: int, seed: int = 0, **knobs) -> FlatShapes:
    """The embedded scenes with flat-coloured objects; ``knobs`` are :class:`ShapesConfig` fields."""
    _check_knobs(knobs)
    return FlatShapes(split=split, num_images=num_images, seed=seed, config=ShapesConfig(**knobs))


__all__ = ["SHAPES_KNOBS", "FlatShapes", "repaint"]
