"""The run protocol: what turns a resolved run config into numbers, and nothing else.

Data (the splits, the held-out tail of the training stream), seeding and thread counts, the
mini scale's pretraining procedure, building the model, training and evaluating. No files are
read or written here (the pretraining cache, records and provenance are
:mod:`ablations.execute`'s), so that this module, with ``seg_core``, holds all the code a
result's fingerprint can cover (the definitions a run reaches, :mod:`ablations.codehash`): a
change elsewhere in the driver never marks results stale.
"""

from __future__ import annotations

import itertools
import json
import time
from functools import lru_cache
from pathlib import Path

import torch

import seg_core.engine as engine
from seg_core.complexity import model_complexity
from seg_core.data.splits import take
from seg_core.distributed import Shard
from seg_core.metrics import band_width_for
from seg_core.models.pretraining import pretraining_network
from seg_core.registry import DATASETS, MODELS

ROOT = Path(__file__).resolve().parent.parent
SIZE_KEYS = ("name", "train_images", "val_images", "holdout_images")  # how much data, not which
PRETRAIN_THREADS = 2  # fixed, so the pretrained weights do not depend on the machine's cores
RUN_THREADS = 1  # fixed per run; parallelism comes from running several runs at once
MAC_CONVENTION = "MACs = multiply-accumulates (FlopCounterMode FLOPs / 2), batch 1"


def dataset_kwargs(data: dict) -> dict:
    """Builder options of a data section; a relative ``root`` is the project's (not the
    current directory's), so a run finds its data wherever it is started from."""
    kwargs = {k: v for k, v in data.items() if k not in SIZE_KEYS}
    if "root" in kwargs:
        kwargs["root"] = str(resolve_root(kwargs["root"]))
    return kwargs


def resolve_root(root: str) -> Path:
    path = Path(root).expanduser()
    return path if path.is_absolute() else ROOT / path


@lru_cache(maxsize=4)
def _dataset(data_json: str, split: str, num_images: int):
    data = json.loads(data_json)
    return DATASETS.build(data["name"], split=split, num_images=num_images, **dataset_kwargs(data))


def dataset(data: dict, split: str, num_images: int):
    return _dataset(json.dumps(data, sort_keys=True), split, num_images)


def build_model(model_cfg: dict, num_classes: int) -> torch.nn.Module:
    kwargs = {k: v for k, v in model_cfg.items() if k != "name"}
    return MODELS.build(model_cfg["name"], num_classes=num_classes, **kwargs)


def complexity_record(model: torch.nn.Module, input_size: tuple[int, int]) -> dict:
    shape = (1, 3, *input_size)
    return {"convention": MAC_CONVENTION, "input_shape": list(shape), **model_complexity(model, shape)}


# ------------------------------------------------------------------------- pretraining
def pretrain_backbone(pre_cfg: dict) -> tuple[dict, dict]:
    """The mini scale's stand-in for the papers' large-scale pretraining: the backbone with a 1x1
    classifier (:func:`seg_core.models.pretraining_network`) trained densely on the ``pretrain``
    split, which shares no image with train/val, at :data:`PRETRAIN_THREADS` threads (the
    caller's thread count is restored). Returns (the backbone's state dict, training stats)."""
    threads = torch.get_num_threads()
    try:
        p = pre_cfg["pretrain"]
        engine.seed_everything(p.get("seed", 0), PRETRAIN_THREADS)
        data = dict(pre_cfg["data"], train_images=p["images"], val_images=1)
        train_set = DATASETS.build(data["name"], split="pretrain", num_images=p["images"], **dataset_kwargs(data))
        model = pretraining_network(pre_cfg["backbone"], pre_cfg["backbone_options"], len(train_set.class_names))
        schedule = engine.TrainConfig(
            steps=p["steps"],
            batch_size=p["batch_size"],
            lr=p["lr"],
            momentum=p.get("momentum", 0.9),
            weight_decay=p.get("weight_decay", 1e-4),
            poly_power=p.get("poly_power", 0.9),
        )
        stats = engine.train(model, train_set, schedule, seed=p.get("seed", 0), desc="pretrain backbone")
        return model.backbone.state_dict(), stats
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------- a run
_FEATURES: dict = {}


def run(
    config: dict, *, desc: str, backbone_state: dict | None, backbone_id: str | None, shard: Shard | None = None
) -> tuple[torch.nn.Module, dict]:
    """Train and evaluate one run config; returns the trained model and the record's numbers.

    ``backbone_state`` (pretrained weights, identified by ``backbone_id``) is loaded into the
    model's backbone. ``shard``: this process's part of a data-parallel run
    (:mod:`seg_core.distributed`). Raises :class:`seg_core.engine.TrainingDiverged` when the
    loss diverges.
    """
    seed = config["seed"]
    data_cfg = config["data"]
    n_train, n_holdout = data_cfg["train_images"], data_cfg.get("holdout_images", 0)
    stream = dataset(data_cfg, "train", n_train + n_holdout)
    train_set = take(stream, 0, n_train)
    holdout_set = take(stream, n_train, n_train + n_holdout) if n_holdout else None  # never trained on
    val_set = dataset(data_cfg, "val", data_cfg["val_images"])
    class_names = list(stream.class_names)

    engine.seed_everything(seed, RUN_THREADS)
    model = build_model(config["model"], len(class_names))
    if backbone_state is not None:
        model.backbone.load_state_dict(backbone_state)
    schedule = engine.TrainConfig(**config["train"])
    if schedule.sync_bn and shard is not None and shard.world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(engine.resolve_device(schedule.device))
    # Features may be shared between runs only when the frozen weights are the same (a pretrained
    # backbone, identified by its id) and the models extract the same features.
    cache_key = (
        None
        if backbone_id is None
        else (backbone_id, json.dumps(data_cfg, sort_keys=True), type(model).__name__, tuple(model.decoder_inputs))
    )
    t0 = time.perf_counter()
    train_stats = engine.train(
        model, train_set, schedule, seed=seed, desc=desc, feature_cache=_FEATURES, cache_key=cache_key, shard=shard
    )
    eval_cfg = config.get("eval", {})
    height, width = (int(v) for v in val_set[0]["image"].shape[-2:])
    evaluation = {
        "num_classes": len(class_names),
        "band_width": eval_cfg.get("band_width", band_width_for(height, width)),
        "batch_size": eval_cfg.get("batch_size", 64),
        "postprocess": eval_cfg.get("postprocess"),
        "metrics": eval_cfg.get("metrics", ()),
        "workers": eval_cfg.get("workers", 0),
        "shard": shard,
        "inference": eval_cfg.get("inference"),
        "amp": config["train"].get("amp", "none"),
    }
    model.reconfigure(**eval_cfg.get("model", {}))  # e.g. another output stride for evaluation
    search = None
    if postprocess_grid(evaluation["postprocess"]) is not None:  # chosen on held-out training data, never on val
        search = tune_postprocess(model, holdout_set, evaluation)
        evaluation["postprocess"] = search["chosen"]
    metrics = engine.evaluate(model, val_set, **evaluation)
    eval_s = metrics.pop("eval_s")
    holdout_metrics = None
    if holdout_set is not None:  # for choices (schedules, learning rates); the report never shows it
        holdout_metrics = engine.evaluate(model, holdout_set, **evaluation)
        holdout_metrics.pop("eval_s")
    numbers = {
        "class_names": class_names,
        "metrics": metrics,
        "holdout_metrics": holdout_metrics,
        "complexity": complexity_record(model, (height, width)),
        "timing": {
            "wall_s": round(time.perf_counter() - t0, 3),
            "train_s": train_stats["train_s"],
            "feature_extract_s": train_stats["feature_extract_s"],
            "steps_per_s": train_stats["steps_per_s"],
            "eval_s": eval_s,
        },
        "postprocess_search": search,
        "training": {
            "steps": train_stats["steps"],
            "final_loss": train_stats["final_loss"],
            "loss_curve": train_stats["loss_curve"],
        },
    }
    return model, numbers


def postprocess_grid(postprocess: dict | None) -> list[dict] | None:
    """The post-processor settings to try when some of its options are lists (a grid, in the
    options' order), else None."""
    if not postprocess or not any(isinstance(v, list) for v in postprocess.values()):
        return None
    keys = list(postprocess)
    values = [v if isinstance(v, list) else [v] for v in postprocess.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def tune_postprocess(model: torch.nn.Module, holdout_set, evaluation: dict) -> dict:
    """Evaluate every setting of the grid on the held-out images and keep the best mIoU (the
    first on a tie): a post-processor's settings are chosen on held-out data, never on the split that is reported."""
    trials = []
    for params in postprocess_grid(evaluation["postprocess"]):
        scored = engine.evaluate(model, holdout_set, **{**evaluation, "postprocess": params})
        trials.append({"params": params, "holdout_miou": scored["miou"]})
    best = max(range(len(trials)), key=lambda i: (trials[i]["holdout_miou"], -i))
    return {"on": "holdout", "trials": trials, "chosen": trials[best]["params"]}
