"""A small, seeded, deterministic train/evaluate engine with named hooks.

* :func:`train`: SGD with momentum and the poly schedule (``torch.optim.lr_scheduler.PolynomialLR``:
  ``lr (1 - t/T)^power``, the schedule of DeepLab, PSPNet, ICNet and GCN). With
  ``freeze_backbone`` the trunk (``model.extract``) runs in eval mode and only the decoder is
  trained; for an in-memory dataset its features are extracted once and cached.
* :func:`evaluate`: one confusion matrix over the whole set, plus boundary-band / interior
  matrices and any registered metric families; optional post-processing of the class
  probabilities (e.g. a dense CRF) before the argmax.

**Data.** A dataset item is a dict with a uint8 ``image`` (3, H, W) and a ``label`` (H, W).
In-memory datasets (``images`` / ``labels`` tensors, the synthetic set) are batched by indexing
those tensors. Any other dataset goes through a :class:`~torch.utils.data.DataLoader`: each item
(image and label together, from one ``__getitem__``) is loaded by the workers; a dataset with a
``get(index, generator)`` method draws its augmentation from that generator, seeded per sample
and step from the run's seed, so augmentation is redrawn every time a sample is used and does
not depend on the number of workers.

**Hooks** (registered by name in :mod:`seg_core.registry`, so a new paper plugs in without
touching this module):

* extra model inputs: ``model.extra_inputs`` names :data:`~seg_core.registry.INPUTS` makers,
  each ``(batch) -> tensor``, passed to the model as keyword arguments;
* extra targets: a loss term reading a target other than ``label`` gets it from the
  :data:`~seg_core.registry.TARGETS` maker of that name, ``(batch) -> tensor``;
* post-processing: ``postprocess = {"type": name, ...}`` builds a
  :data:`~seg_core.registry.POSTPROCESSORS` entry, ``(probabilities, batch) -> probabilities``;
* metric families: ``metrics = [name, ...]`` builds :data:`~seg_core.registry.METRIC_FAMILIES`
  entries with ``update(prediction, batch)`` and ``summary() -> dict``.

Determinism: :func:`seed_everything` seeds torch, fixes the intra-op thread count and turns
on deterministic algorithms. The same config, seed and thread count give bit-identical
results on the same machine and torch build.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from seg_core.distributed import Shard
from seg_core.losses import CompositeLoss
from seg_core.metrics import SegmentationEvaluator
from seg_core.progress import progress
from seg_core.registry import INFERENCE, INPUTS, METRIC_FAMILIES, POSTPROCESSORS, TARGETS, ConfigError

AMP_MODES = ("none", "bf16")
DEVICES = ("cpu", "cuda", "auto")
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
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
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
    workers: int = 0  # DataLoader workers for file-backed datasets (the in-memory path uses none)
    backbone_lr_mult: float = 1.0  # the backbone's learning rate, relative, when it is fine-tuned
    device: str = "cpu"  # "cpu", "cuda" or "auto" (CUDA when there is one)
    sync_bn: bool = False  # BatchNorm statistics over all processes of a data-parallel run (CUDA)
    amp: str = "none"  # "bf16": autocast forward and loss to bfloat16 (CPU or CUDA)
    channels_last: bool = False  # model and images in channels-last memory format

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(key, f"expected an integer >= 1, got {getattr(self, key)}")
        if not self.lr > 0:
            raise ConfigError("lr", f"expected a learning rate > 0, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0 or self.poly_power < 0:
            bad = next(k for k in ("momentum", "weight_decay", "poly_power") if getattr(self, k) < 0)
            raise ConfigError(bad, f"expected a number >= 0, got {getattr(self, bad)}")
        if self.workers < 0:
            raise ConfigError("workers", f"expected an integer >= 0, got {self.workers}")
        if not self.backbone_lr_mult >= 0:
            raise ConfigError("backbone_lr_mult", f"expected a number >= 0, got {self.backbone_lr_mult}")
        if self.device not in DEVICES:
            raise ConfigError("device", f"expected one of {list(DEVICES)}, got {self.device!r}")
        if self.amp not in AMP_MODES:
            raise ConfigError("amp", f"expected one of {list(AMP_MODES)}, got {self.amp!r}")


class TrainingDiverged(FloatingPointError):
    """The loss became non-finite: where and at which learning rate."""

    def __init__(self, step: int, loss: float, lr: float) -> None:
        self.step, self.loss, self.lr = step, loss, lr
        super().__init__(f"loss became {loss} at step {step} (lr {lr:.3g}); lower train.lr")


# ------------------------------------------------------------------------------ batches
def in_memory(dataset: Dataset) -> bool:
    return isinstance(getattr(dataset, "images", None), torch.Tensor) and isinstance(
        getattr(dataset, "labels", None), torch.Tensor
    )


def _index_batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices of ``steps`` mini-batches drawn epoch by epoch from seeded permutations."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=generator)])
        yield order[:batch_size]
        order = order[batch_size:]


def sample_seed(seed: int, step: int, slot: int) -> int:
    """The augmentation seed of one sample: a function of the run's seed, the step and the slot."""
    digest = hashlib.sha256(f"augment/{seed}/{step}/{slot}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class _Augmented(Dataset):
    """``dataset`` indexed by ``(index, seed)``: ``dataset.get(index, generator)`` where it draws
    augmentation, else plain ``dataset[index]``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = key
        if hasattr(self.dataset, "get"):
            return self.dataset.get(index, torch.Generator().manual_seed(seed))
        return self.dataset[index]


def collate(items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack the items' tensors key by key (every item has the same keys and sizes)."""
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def train_batches(
    dataset: Dataset, config: TrainConfig, seed: int, shard: Shard | None = None
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """``config.steps`` training batches as ``(indices, batch)``, from seeded epoch permutations.

    With a ``shard``, this rank's part of each global batch: every ``world``-th sample from its
    ``rank``, each keeping its global slot (so its augmentation seed) in the batch.
    """
    generator = torch.Generator().manual_seed(seed)
    rank, world = (shard.rank, shard.world) if shard is not None else (0, 1)
    slots = list(range(rank, config.batch_size, world))
    indices = (idx[rank::world] for idx in _index_batches(len(dataset), config.batch_size, config.steps, generator))
    if in_memory(dataset):
        for idx in indices:
            yield idx, {"image": dataset.images[idx], "label": dataset.labels[idx]}
        return
    keys = [
        [(int(i), sample_seed(seed, step, slot)) for slot, i in zip(slots, idx)] for step, idx in enumerate(indices)
    ]
    loader = DataLoader(
        _Augmented(dataset),
        batch_sampler=keys,
        num_workers=config.workers,
        collate_fn=collate,
        persistent_workers=config.workers > 0,
    )
    for key, batch in zip(keys, loader):
        yield torch.tensor([i for i, _ in key]), batch


def eval_batches(
    dataset: Dataset, batch_size: int, workers: int = 0, shard: Shard | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """The whole set in order, without augmentation (with a ``shard``: every ``world``-th item)."""
    rank, world = (shard.rank, shard.world) if shard is not None else (0, 1)
    if in_memory(dataset):
        images, labels = dataset.images[rank::world], dataset.labels[rank::world]
        for start in range(0, len(images), batch_size):
            yield {"image": images[start : start + batch_size], "label": labels[start : start + batch_size]}
        return
    part = dataset if world == 1 else Subset(dataset, range(rank, len(dataset), world))
    yield from DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)


def model_inputs(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The extra inputs the model names (``model.extra_inputs``), made from the batch."""
    return {name: INPUTS.get(name)(batch) for name in getattr(model, "extra_inputs", ())}


def loss_targets(criterion: CompositeLoss, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``label`` plus every other target a loss term reads, made by its registered maker."""
    targets = {"label": batch["label"]}
    for name in criterion.targets - {"label"}:
        targets[name] = batch[name] if name in batch else TARGETS.get(name)(batch)
    return targets


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when there is one, else the CPU; ``"cuda"`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "CUDA was asked for, but torch sees no CUDA device here")
    return torch.device(name)


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors on ``device`` (no copy when they are there already)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _precision(amp: str, device: torch.device):
    """bfloat16 autocast for ``amp = "bf16"``; nothing at all otherwise (bit-identical fp32)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp == "bf16" else nullcontext()


def _input(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = normalize(images)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ------------------------------------------------------------------------------- training
@torch.no_grad()
def extract_features(
    model: nn.Module, images: torch.Tensor, stages: Sequence[str], batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """Run the frozen trunk (``model.extract``) in eval mode over uint8 images; keep the named features."""
    was_training = model.backbone.training
    model.backbone.eval()
    chunks: dict[str, list[torch.Tensor]] = {s: [] for s in stages}
    for start in range(0, len(images), batch_size):
        feats = model.extract(normalize(images[start : start + batch_size].to(_device_of(model))))
        for s in stages:
            chunks[s].append(feats[s])
    model.backbone.train(was_training)
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
    shard: Shard | None = None,
) -> dict:
    """Train ``model`` in place; returns the loss curve (``[step, loss, lr]`` at about 50
    steps), wall time and throughput.

    ``feature_cache`` (a dict the caller keeps) and ``cache_key`` (identifying the frozen
    trunk's weights and the training set) let consecutive runs share extracted features.
    Raises :class:`TrainingDiverged` when the loss stops being finite. With a ``shard`` (one of
    several data-parallel processes) ``config.batch_size`` is the global batch: this rank trains
    on its part and gradients are averaged across ranks (:mod:`seg_core.distributed`).
    """
    if shard is not None and config.batch_size % shard.world:
        raise ConfigError(
            "batch_size", f"a global batch of {config.batch_size} does not split over {shard.world} processes"
        )
    criterion = CompositeLoss.from_config(config.loss)
    cached = None
    extract_s = 0.0
    if config.freeze_backbone:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        params = [p for p in model.decoder_parameters() if p.requires_grad]
        model.train()
        model.backbone.eval()
        if in_memory(dataset):
            t0 = time.perf_counter()
            if feature_cache is not None and cache_key is not None and cache_key in feature_cache:
                cached = feature_cache[cache_key]
            else:
                cached = extract_features(model, dataset.images, model.decoder_inputs)
                if feature_cache is not None and cache_key is not None:
                    feature_cache.clear()  # keep one feature set in memory at a time
                    feature_cache[cache_key] = cached
            extract_s = time.perf_counter() - t0
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        model.train()
    groups: list = params
    if not config.freeze_backbone and config.backbone_lr_mult != 1.0:  # fine-tuning: a slower backbone
        in_backbone = {id(p) for p in model.backbone.parameters()}
        groups = [
            {"params": [p for p in params if id(p) in in_backbone], "lr": config.lr * config.backbone_lr_mult},
            {"params": [p for p in params if id(p) not in in_backbone]},
        ]
    if config.channels_last:
        model.to(memory_format=torch.channels_last)

    optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=config.steps, power=config.poly_power)
    curve = []
    bar = progress(config.steps, desc)
    t0 = time.perf_counter()
    try:
        device = _device_of(model)
        for step, (idx, batch) in enumerate(train_batches(dataset, config, seed, shard)):
            batch = to_device(batch, device)
            lr = scheduler.get_last_lr()[-1]  # the decoder's (the backbone's is lr x backbone_lr_mult)
            extra = model_inputs(model, batch)
            size = tuple(batch["image"].shape[-2:])
            with _precision(config.amp, batch["image"].device):
                if cached is not None:
                    outputs = model.decode({s: f[idx] for s, f in cached.items()}, size, **extra)
                elif config.freeze_backbone:
                    with torch.no_grad():
                        features = model.extract(_input(batch["image"], config.channels_last))
                    outputs = model.decode(features, size, **extra)
                else:
                    outputs = model(_input(batch["image"], config.channels_last), **extra)
                loss, _ = criterion(outputs, loss_targets(criterion, batch))
            loss = loss.float()
            reported = loss.detach().clone()
            if shard is not None:  # every rank sees the same mean loss, so they stop together
                reported = shard.all_reduce_(reported) / shard.world
            value = float(reported)
            if not torch.isfinite(reported):
                raise TrainingDiverged(step, value, lr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if shard is not None:
                shard.average_gradients(params)
            optimizer.step()
            scheduler.step()
            if step % max(1, config.steps // 50) == 0 or step == config.steps - 1:
                curve.append([step, round(value, 6), float(f"{lr:.6g}")])
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)
            bar.update()
    finally:
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


# ----------------------------------------------------------------------------- evaluation
def _build(registry, spec: Mapping[str, Any]):
    options = dict(spec)
    return registry.build(options.pop("type"), **options)


def build_postprocessor(spec: Mapping[str, Any] | None):
    """``{"type": name, **options}`` -> the registered post-processor (None: none)."""
    return _build(POSTPROCESSORS, spec) if spec else None


@INFERENCE.register("whole")
def whole_image():
    """The model on the whole (batched) image, as trained: logits at the input size."""
    return lambda model, image, extra: model(image, **extra)["out"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    num_classes: int,
    band_width: float | None = None,
    batch_size: int = 64,
    postprocess: Mapping[str, Any] | None = None,
    metrics: Sequence[str] = (),
    workers: int = 0,
    shard: Shard | None = None,
    inference: Mapping[str, Any] | None = None,
    amp: str = "none",
) -> dict:
    """Metrics over the whole set from one confusion matrix (see :mod:`seg_core.metrics`).

    ``postprocess`` (``{"type": name, ...}``) maps the softmax probabilities before the argmax;
    its time is reported as ``postprocess_s``, and the metrics of the predictions before it as
    ``raw_<metric>``. ``metrics`` names extra metric families. With a
    ``shard``, each rank scores its part of the set and the confusion matrices (and the metric
    families, through their ``reduce(shard)``) are summed across ranks. ``inference``
    (``{"type": name, ...}``, default whole-image) turns a batch into logits at the image size
    (:data:`~seg_core.registry.INFERENCE`: e.g. sliding windows at full resolution).
    """
    model.eval()
    evaluator = SegmentationEvaluator(num_classes, band_width)
    families = {name: METRIC_FAMILIES.build(name, num_classes=num_classes) for name in metrics}
    post = build_postprocessor(postprocess)
    raw = SegmentationEvaluator(num_classes, band_width) if post is not None else None  # before post-processing
    infer = _build(INFERENCE, inference or {"type": "whole"})
    post_s = 0.0
    t0 = time.perf_counter()
    device = _device_of(model)
    for batch in eval_batches(dataset, batch_size, workers, shard):
        batch = to_device(batch, device)
        with _precision(amp, batch["image"].device):
            logits = infer(model, normalize(batch["image"]), model_inputs(model, batch)).float()
        label = batch["label"].long()
        if post is not None:
            raw.update(logits.argmax(1), label)
            t1 = time.perf_counter()
            logits = post(torch.softmax(logits, 1), batch)
            post_s += time.perf_counter() - t1
        pred = logits.argmax(1)
        evaluator.update(pred, label)
        for family in families.values():
            family.update(pred, batch)
    if shard is not None:
        for ev in (evaluator, raw):
            if ev is not None:
                ev.reduce(shard)
        for family in families.values():
            family.reduce(shard)
    out = evaluator.summary()
    if raw is not None:  # the same predictions before post-processing, prefixed raw_
        out.update({f"raw_{k}": v for k, v in raw.summary().items()})
    for family in families.values():
        out.update(family.summary())
    out["eval_s"] = round(time.perf_counter() - t0, 3)
    if post is not None:
        out["postprocess_s"] = round(post_s, 3)
    return out
