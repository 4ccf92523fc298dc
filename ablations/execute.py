"""Execute one resolved run: build data and model through seg_core, train, evaluate, record.

This is the only module of the driver that touches models. It keeps small in-process caches
(datasets, frozen-backbone features) so that a worker running several variants of one sweep
generates the data and extracts the features once.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ablations.store import config_hash, dumps, write_atomic
from seg_core import engine
from seg_core.complexity import count_macs, count_parameters, model_complexity
from seg_core.data import take
from seg_core.heads import weight_count
from seg_core.metrics import band_width_for
from seg_core.models import MODELS, build_head
from seg_core.registry import DATASETS

SIZE_KEYS = ("name", "train_images", "val_images", "holdout_images")  # how much data, not which
PRETRAIN_THREADS = 2  # fixed, so the pretrained weights do not depend on the machine's cores
RUN_THREADS = 1       # fixed per run; parallelism comes from running several runs at once


def _dataset_kwargs(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in SIZE_KEYS}


@lru_cache(maxsize=4)
def _dataset(data_json: str, split: str, num_images: int):
    data = json.loads(data_json)
    return DATASETS.build(data["name"], split=split, num_images=num_images, **_dataset_kwargs(data))


def dataset(data: dict, split: str, num_images: int):
    return _dataset(json.dumps(data, sort_keys=True), split, num_images)


def build_model(model_cfg: dict, num_classes: int) -> torch.nn.Module:
    kwargs = {k: v for k, v in model_cfg.items() if k != "name"}
    return MODELS.build(model_cfg["name"], num_classes=num_classes, **kwargs)


# ------------------------------------------------------------------------- pretraining
def pretrain_config(config: dict) -> dict | None:
    """What determines a run's pretrained backbone: backbone, data knobs, pretrain schedule."""
    if not config.get("pretrain"):
        return None
    model = config["model"]
    return {
        "backbone": model["backbone"],
        "backbone_options": model.get("backbone_options", {}),
        "data": {k: v for k, v in config["data"].items() if k not in SIZE_KEYS[1:]},
        "pretrain": config["pretrain"],
        "threads": PRETRAIN_THREADS,
    }


def pretrain_paths(cache_dir: Path, pre_cfg: dict) -> tuple[Path, Path]:
    h = config_hash(pre_cfg)[:16]
    return cache_dir / "pretrained" / f"{h}.pt", cache_dir / "pretrained" / f"{h}.json"


def ensure_pretrained(cache_dir: Path, pre_cfg: dict) -> dict:
    """Pretrain (once, cached) the backbone of ``pre_cfg``; returns its metadata.

    Mini-scale stand-in for ImageNet/COCO pretraining: the backbone with a 1x1 classifier (the
    paper's baseline network) is trained densely on the ``pretrain`` split, which shares no
    image with train/val. Runs then freeze it and train their own head.
    """
    weights, meta_path = pretrain_paths(cache_dir, pre_cfg)
    if weights.exists() and meta_path.exists():
        return json.loads(meta_path.read_text())
    threads = torch.get_num_threads()
    try:
        return _pretrain(weights, meta_path, pre_cfg)
    finally:
        torch.set_num_threads(threads)  # the caller's runs keep their own thread count


def _pretrain(weights: Path, meta_path: Path, pre_cfg: dict) -> dict:
    p = pre_cfg["pretrain"]
    engine.seed_everything(p.get("seed", 0), PRETRAIN_THREADS)
    data = dict(pre_cfg["data"], train_images=p["images"], val_images=1)
    train_set = DATASETS.build(data["name"], split="pretrain", num_images=p["images"], **_dataset_kwargs(data))
    model = build_model(
        {"name": "single_head", "backbone": pre_cfg["backbone"], "head": "pointwise",
         "backbone_options": pre_cfg["backbone_options"]},
        train_set.num_classes,
    )
    schedule = engine.TrainConfig(
        steps=p["steps"], batch_size=p["batch_size"], lr=p["lr"], momentum=p.get("momentum", 0.9),
        weight_decay=p.get("weight_decay", 1e-4), poly_power=p.get("poly_power", 0.9),
    )
    stats = engine.train(model, train_set, schedule, seed=p.get("seed", 0), desc="pretrain backbone")
    meta = {"config": pre_cfg, "hash": config_hash(pre_cfg), "train_s": stats["train_s"],
            "final_loss": stats["final_loss"], "steps": stats["steps"]}
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(".pt.tmp")
    torch.save(model.backbone.state_dict(), tmp)
    os.replace(tmp, weights)
    write_atomic(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


# ---------------------------------------------------------------------------- provenance
@lru_cache(maxsize=1)
def _git() -> dict:
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or None
    dirty = bool(git("status", "--porcelain", "--", "seg_core", "ablations")) if commit else None
    return {"git_commit": commit, "git_dirty": dirty}


def provenance() -> dict:
    import torchvision

    return {
        **_git(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------- a run
_FEATURES: dict = {}


def execute_run(run: dict[str, Any], *, cache_dir: str, quiet: bool = False) -> dict:
    """Train and evaluate one run; write its result file atomically; return the record."""
    if quiet:
        os.environ["SEGBENCH_QUIET"] = "1"
    config = run["config"]
    seed = config["seed"]
    data_cfg = config["data"]
    n_train, n_holdout = data_cfg["train_images"], data_cfg.get("holdout_images", 0)
    stream = dataset(data_cfg, "train", n_train + n_holdout)
    train_set = take(stream, 0, n_train)
    holdout_set = take(stream, n_train, n_train + n_holdout) if n_holdout else None  # never trained on
    val_set = dataset(data_cfg, "val", data_cfg["val_images"])

    engine.seed_everything(seed, RUN_THREADS)
    model = build_model(config["model"], train_set.num_classes)
    pre_cfg = pretrain_config(config)
    pre_meta = None
    if pre_cfg is not None:
        pre_meta = ensure_pretrained(Path(cache_dir), pre_cfg)
        weights, _ = pretrain_paths(Path(cache_dir), pre_cfg)
        model.backbone.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))

    schedule = engine.TrainConfig(**config["train"])
    # Features may be shared between runs only when the frozen weights are the same: a
    # pretrained backbone (identified by its hash). A randomly initialised one differs per seed.
    # ... and only between models that extract the same features (ICNet's multi-resolution trunk differs).
    cache_key = None if pre_meta is None else (
        pre_meta["hash"], json.dumps(data_cfg, sort_keys=True), type(model).__name__, tuple(model.decoder_inputs))
    t0 = time.perf_counter()
    train_stats = engine.train(
        model, train_set, schedule, seed=seed, desc=f"{run['variant']} s{seed}",
        feature_cache=_FEATURES, cache_key=cache_key,
    )
    eval_cfg = config.get("eval", {})
    height, image_size = (int(v) for v in train_set[0]["image"].shape[-2:])
    band = eval_cfg.get("band_width", band_width_for(height, image_size))
    metrics = engine.evaluate(
        model, val_set, num_classes=train_set.num_classes, band_width=band,
        batch_size=eval_cfg.get("batch_size", 64),
    )
    eval_s = metrics.pop("eval_s")
    holdout_metrics = None
    if holdout_set is not None:  # for choices (schedules, learning rates); the report never shows it
        holdout_metrics = engine.evaluate(model, holdout_set, num_classes=train_set.num_classes, band_width=band,
                                          batch_size=eval_cfg.get("batch_size", 64))
        holdout_metrics.pop("eval_s")
    top = model.backbone.out_channels[model.backbone.top]
    top_size = image_size // model.backbone.output_stride
    head = getattr(model, "head", None)
    complexity = {
        "convention": "MACs = multiply-accumulates (FlopCounterMode FLOPs / 2), batch 1",
        "input_shape": [1, 3, image_size, image_size],
        **model_complexity(model, (1, 3, image_size, image_size)),
    }
    if head is not None:
        complexity.update({
            "params_head": count_parameters(head),
            "head_weights": weight_count(head),
            "macs_head": count_macs(head, (1, top, top_size, top_size)),
            "top_feature_map": [top, top_size, top_size],
        })
    if config.get("paper_config"):
        pc, m = config["paper_config"], config["model"]
        at_paper = build_head(m["head"], in_channels=pc["in_channels"], num_classes=pc["num_classes"],
                              k=m.get("k"), stack_width=pc.get("stack_width"))
        complexity["head_weights_paper_config"] = weight_count(at_paper)
    record = {
        "schema": 1,
        "ablation": run["ablation"],
        "scale": run["scale"],
        "scale_tag": run["scale_tag"],
        "variant": run["variant"],
        "seed": seed,
        "config_hash": run["config_hash"],
        "config": config,
        "overrides": run.get("overrides", {}),
        "metrics": metrics,
        "holdout_metrics": holdout_metrics,
        "complexity": complexity,
        "timing": {
            "wall_s": round(time.perf_counter() - t0, 3),
            "train_s": train_stats["train_s"],
            "feature_extract_s": train_stats["feature_extract_s"],
            "steps_per_s": train_stats["steps_per_s"],
            "eval_s": eval_s,
        },
        "training": {"steps": train_stats["steps"], "final_loss": train_stats["final_loss"],
                     "loss_curve": train_stats["loss_curve"]},
        "pretrained_backbone": None if pre_meta is None else {
            "hash": pre_meta["hash"], "steps": pre_meta["steps"], "final_loss": pre_meta["final_loss"]},
        "provenance": provenance(),
    }
    write_atomic(Path(run["path"]), dumps(record))
    return record
