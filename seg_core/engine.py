"""A small, seeded, deterministic train/evaluate engine.

* :func:`train` runs SGD with momentum and the poly schedule ``lr * (1 - t/T)^power`` (the
  schedule of DeepLab, PSPNet, ICNet and GCN). With ``freeze_backbone`` the backbone runs in
  eval mode once over the training set, its features are cached in memory, and only the
  decoder is trained: the same optimisation problem as training the head on a frozen network,
  at a fraction of the cost.
* :func:`evaluate` accumulates one confusion matrix over the whole set (and boundary-band /
  interior ones when a band width is given).

Determinism: :func:`seed_everything` seeds torch, fixes the intra-op thread count and turns
on deterministic algorithms. The same config, seed and thread count give bit-identical
results on the same machine and torch build; results at different thread counts may differ
in the last bits, so callers fix the thread count per run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from seg_core.losses import CompositeLoss
from seg_core.metrics import SegmentationEvaluator
from seg_core.progress import progress

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def seed_everything(seed: int, threads: int | None = None) -> torch.Generator:
    """Seed python and torch, fix the thread count, enable deterministic algorithms."""
    random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float, ImageNet mean/std (the convention of torchvision weights)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    freeze_backbone: bool = False
    loss: Mapping[str, Mapping] = field(default_factory=lambda: {"seg": {"type": "cross_entropy"}})

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def poly_lr(base_lr: float, step: int, total: int, power: float) -> float:
    return base_lr * (1 - step / total) ** power


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    """Indices of ``steps`` mini-batches drawn epoch by epoch from seeded permutations."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        yield order[:batch_size]
        order = order[batch_size:]


def _stack(dataset: Dataset, key: str) -> torch.Tensor:
    """All items' ``key`` as one tensor (fast path for in-memory datasets)."""
    if isinstance(getattr(dataset, f"{key}s", None), torch.Tensor):
        return getattr(dataset, f"{key}s")
    return torch.stack([dataset[i][key] for i in range(len(dataset))])


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, stages, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Run the frozen part of ``model`` in eval mode over uint8 images; keep the named features.

    The frozen part is ``model.extract`` where a model defines it (ICNet: a multi-resolution
    trunk), else ``model.backbone`` (or ``model`` itself when it is a backbone).
    """
    backbone = getattr(model, "backbone", model)
    extract = getattr(model, "extract", backbone)
    was_training = backbone.training
    backbone.eval()
    chunks: dict[str, list[torch.Tensor]] = {s: [] for s in stages}
    for start in range(0, len(images), batch_size):
        feats = extract(normalize(images[start : start + batch_size]))
        for s in stages:
            chunks[s].append(feats[s])
    backbone.train(was_training)
    return {s: torch.cat(v) for s, v in chunks.items()}


def train(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    seed: int,
    desc: str = "train",
    feature_cache: dict | None = None,
    cache_key: object = None,
) -> dict:
    """Train ``model`` in place; returns loss curve, wall time and throughput.

    ``feature_cache`` (a dict the caller keeps) and ``cache_key`` (identifying the frozen
    backbone weights and the training set) let consecutive runs share extracted features.
    """
    generator = torch.Generator().manual_seed(seed)
    criterion = CompositeLoss.from_config(config.loss)
    images = _stack(dataset, "image")
    labels = _stack(dataset, "label")
    size = tuple(images.shape[-2:])

    if config.freeze_backbone:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        params = [p for p in model.decoder_parameters() if p.requires_grad]
        t0 = time.perf_counter()
        if feature_cache is not None and cache_key is not None and cache_key in feature_cache:
            features = feature_cache[cache_key]
        else:
            features = extract_features(model, images, model.decoder_inputs)
            if feature_cache is not None and cache_key is not None:
                feature_cache.clear()  # keep one feature set in memory at a time
                feature_cache[cache_key] = features
        extract_s = time.perf_counter() - t0
        model.backbone.eval()
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        extract_s = 0.0
        model.train()

    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    curve = []
    bar = progress(config.steps, desc)
    t0 = time.perf_counter()
    for step, idx in enumerate(_batches(len(images), config.batch_size, config.steps, generator)):
        lr = poly_lr(config.lr, step, config.steps, config.poly_power)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if config.freeze_backbone:
            outputs = model.decode({s: f[idx] for s, f in features.items()}, size)
        else:
            outputs = model(normalize(images[idx]))
        loss, parts = criterion(outputs, {"label": labels[idx]})
        if not torch.isfinite(loss):
            bar.close()
            raise FloatingPointError(f"loss became {float(loss.detach())} at step {step} (lr {lr:.3g}); lower train.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if step % max(1, config.steps // 50) == 0 or step == config.steps - 1:
            curve.append([step, round(value, 6)])
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        bar.update()
    bar.close()
    wall = time.perf_counter() - t0
    return {
        "steps": config.steps,
        "train_s": round(wall, 3),
        "feature_extract_s": round(extract_s, 3),
        "steps_per_s": round(config.steps / wall, 3),
        "final_loss": curve[-1][1],
        "loss_curve": curve,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    num_classes: int,
    band_width: int | None = None,
    batch_size: int = 64,
) -> dict:
    """Metrics over the whole set from one confusion matrix (see :mod:`seg_core.metrics`)."""
    model.eval()
    evaluator = SegmentationEvaluator(num_classes, band_width)
    images = _stack(dataset, "image")
    labels = _stack(dataset, "label")
    t0 = time.perf_counter()
    for start in range(0, len(images), batch_size):
        out = model(normalize(images[start : start + batch_size]))["out"]
        evaluator.update(out.argmax(1), labels[start : start + batch_size].long())
    metrics = evaluator.summary()
    metrics["eval_s"] = round(time.perf_counter() - t0, 3)
    return metrics
