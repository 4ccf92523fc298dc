"""Execute one resolved run: build data and model through seg_core, train, evaluate, record.

This is the only module of the driver that trains models. It keeps small in-process caches
(datasets, frozen-backbone features) so that a worker running several variants of one sweep
generates the data and extracts the features once.

Every record names the code it depends on (``provenance.code``: a hash per source file, see
:func:`code_fingerprint`), so the report can mark results whose code has changed since, and a
calibration figure of the machine (``provenance.calibration_gflops``: fp32 matmul GFLOP/s on the
run's threads), so run times compare across machines.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from ablations.schema import RECORD_VERSION, source_hash
from ablations.store import config_hash, dumps, write_atomic
from ablations.validate import build_on_meta, dataset_facts
from seg_core import engine
from seg_core.complexity import model_complexity
from seg_core.data import take
from seg_core.metrics import band_width_for
from seg_core.models import pretraining_network
from seg_core.registry import DATASETS, LOSSES, METRIC_FAMILIES, MODELS, POSTPROCESSORS

ROOT = Path(__file__).resolve().parent.parent
SIZE_KEYS = ("name", "train_images", "val_images", "holdout_images")  # how much data, not which
PRETRAIN_THREADS = 2  # fixed, so the pretrained weights do not depend on the machine's cores
RUN_THREADS = 1  # fixed per run; parallelism comes from running several runs at once
MAC_CONVENTION = "MACs = multiply-accumulates (FlopCounterMode FLOPs / 2), batch 1"
# Code every run depends on, besides the modules of its model's classes and its dataset.
CORE_MODULES = (
    "seg_core.engine",
    "seg_core.losses",
    "seg_core.metrics",
    "seg_core.complexity",
    "seg_core.contract",
    "seg_core.layers",
    "seg_core.backbones",
    "seg_core.registry",
    "seg_core.data",
    "ablations.execute",
)


def _dataset_kwargs(data: dict) -> dict:
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
    return DATASETS.build(data["name"], split=split, num_images=num_images, **_dataset_kwargs(data))


def dataset(data: dict, split: str, num_images: int):
    return _dataset(json.dumps(data, sort_keys=True), split, num_images)


def build_model(model_cfg: dict, num_classes: int) -> torch.nn.Module:
    kwargs = {k: v for k, v in model_cfg.items() if k != "name"}
    return MODELS.build(model_cfg["name"], num_classes=num_classes, **kwargs)


# ----------------------------------------------------------------------- code and machine
def code_fingerprint(model: torch.nn.Module, config: dict) -> dict[str, str]:
    """``{source file (relative): hash}`` of the code a run depends on: the core modules, the
    modules of the model's classes, of its dataset, loss terms, post-processor and metrics."""
    modules = set(CORE_MODULES) | {type(m).__module__ for m in model.modules()}
    modules.add(DATASETS.get(config["data"]["name"]).__module__)
    for term in config["train"].get("loss", {}).values():
        if term.get("type") in LOSSES:
            modules.add(LOSSES.get(term["type"]).__module__)
    ev = config.get("eval", {})
    if ev.get("postprocess"):
        modules.add(POSTPROCESSORS.get(ev["postprocess"]["type"]).__module__)
    modules.update(METRIC_FAMILIES.get(name).__module__ for name in ev.get("metrics", []))
    return _hash_modules(tuple(sorted(m for m in modules if m.split(".")[0] in ("seg_core", "ablations"))))


@lru_cache(maxsize=64)
def _hash_modules(modules: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name in modules:
        file = Path(sys.modules[name].__file__).resolve()
        out[file.relative_to(ROOT).as_posix()] = source_hash(file)
    return out


@lru_cache(maxsize=4)
def calibration_gflops(threads: int) -> float:
    """fp32 GFLOP/s of a 512 x 512 matmul on ``threads`` threads (median of 5 x 10): a figure
    of the machine's speed at the time, so that run times compare across machines."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        rates.append(10 * 2 * 512**3 / (time.perf_counter() - t0) / 1e9)
    return round(sorted(rates)[2], 1)


@lru_cache(maxsize=1)
def _git() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or None
    dirty = bool(git("status", "--porcelain", "--", "seg_core", "ablations")) if commit else None
    return {"git_commit": commit, "git_dirty": dirty}


def provenance(code: dict[str, str]) -> dict:
    import torchvision

    threads = torch.get_num_threads()
    return {
        **_git(),
        "code": code,
        "calibration_gflops": calibration_gflops(threads),
        "calibration": "fp32 matmul 512x512, GFLOP/s on the run's threads",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "device": "cpu",
        "threads": threads,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


# ------------------------------------------------------------------------- pretraining
def pretrain_config(config: dict) -> dict | None:
    """What determines a run's pretrained backbone: backbone, data knobs, schedule, and code."""
    if not config.get("pretrain"):
        return None
    model = config["model"]
    pre = {
        "backbone": model["backbone"],
        "backbone_options": model.get("backbone_options", {}),
        "data": {k: v for k, v in config["data"].items() if k not in SIZE_KEYS[1:]},
        "pretrain": config["pretrain"],
        "threads": PRETRAIN_THREADS,
    }
    classes, _ = dataset_facts(config["data"])
    with torch.device("meta"):
        net = pretraining_network(model["backbone"], _no_weights(model.get("backbone_options", {})), len(classes))
    pre["code"] = code_fingerprint(net, {"data": config["data"], "train": {}})
    return pre


def _no_weights(options: dict) -> dict:
    return {k: v for k, v in options.items() if k != "pretrained"}


def pretrain_paths(cache_dir: Path, pre_cfg: dict) -> tuple[Path, Path]:
    h = config_hash(pre_cfg)[:16]
    return cache_dir / "pretrained" / f"{h}.pt", cache_dir / "pretrained" / f"{h}.json"


def read_pretrained(cache_dir: Path, pre_cfg: dict) -> tuple[dict | None, str | None]:
    """(metadata, None) for a complete cache entry; (None, why) for a missing or damaged one."""
    weights, meta_path = pretrain_paths(cache_dir, pre_cfg)
    if not weights.exists() or not meta_path.exists():
        return None, None
    try:
        meta = json.loads(meta_path.read_text())
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (a truncated zip, bad JSON, ...: all mean "damaged")
        return None, f"{weights if meta_path.exists() else meta_path}: unreadable ({type(e).__name__}: {e})"
    if not isinstance(meta, dict) or meta.get("hash") != config_hash(pre_cfg) or not isinstance(state, dict):
        return None, f"{meta_path}: not the metadata of this backbone"
    return meta, None


def ensure_pretrained(cache_dir: Path, pre_cfg: dict, log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Pretrain (once, cached) the backbone of ``pre_cfg``; returns its metadata.

    Mini-scale stand-in for the papers' large-scale pretraining: the backbone with a 1x1
    classifier (:func:`seg_core.models.pretraining_network`) is trained densely on the ``pretrain`` split, which shares no
    image with train/val. Runs then load it. A damaged cache entry (a truncated ``.pt`` or
    ``.json``) is reported with its path and pretrained again. The caller's thread count is
    restored afterwards.
    """
    meta, damaged = read_pretrained(cache_dir, pre_cfg)
    if meta is not None:
        return meta
    if damaged:
        log(f"warning: pretrained backbone cache damaged, pretraining again: {damaged}")
    threads = torch.get_num_threads()
    try:
        return _pretrain(cache_dir, pre_cfg)
    finally:
        torch.set_num_threads(threads)  # the caller's runs keep their own thread count


def _pretrain(cache_dir: Path, pre_cfg: dict) -> dict:
    weights, meta_path = pretrain_paths(cache_dir, pre_cfg)
    p = pre_cfg["pretrain"]
    engine.seed_everything(p.get("seed", 0), PRETRAIN_THREADS)
    data = dict(pre_cfg["data"], train_images=p["images"], val_images=1)
    train_set = DATASETS.build(data["name"], split="pretrain", num_images=p["images"], **_dataset_kwargs(data))
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
    meta = {
        "config": pre_cfg,
        "hash": config_hash(pre_cfg),
        "train_s": stats["train_s"],
        "final_loss": stats["final_loss"],
        "steps": stats["steps"],
    }
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(f".pt.{os.getpid()}.tmp")
    torch.save(model.backbone.state_dict(), tmp)
    os.replace(tmp, weights)
    write_atomic(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


# ---------------------------------------------------------------------------------- a run
_FEATURES: dict = {}


def complexity_record(model: torch.nn.Module, input_size: tuple[int, int]) -> dict:
    shape = (1, 3, *input_size)
    return {"convention": MAC_CONVENTION, "input_shape": list(shape), **model_complexity(model, shape)}


def execute_run(run: dict[str, Any], *, cache_dir: str, quiet: bool = False) -> dict:
    """Train and evaluate one run; write its result file atomically; return the record.

    Raises :class:`seg_core.engine.TrainingDiverged` (nothing written) when the loss diverges:
    the runner records the failure.
    """
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
    class_names = list(stream.class_names)

    engine.seed_everything(seed, RUN_THREADS)
    model = build_model(config["model"], len(class_names))
    pre_cfg = pretrain_config(config)
    pre_meta = None
    if pre_cfg is not None:
        pre_meta = ensure_pretrained(Path(cache_dir), pre_cfg)
        weights, _ = pretrain_paths(Path(cache_dir), pre_cfg)
        model.backbone.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))

    schedule = engine.TrainConfig(**config["train"])
    # Features may be shared between runs only when the frozen weights are the same (a pretrained
    # backbone, identified by its hash) and the models extract the same features.
    cache_key = (
        None
        if pre_meta is None
        else (pre_meta["hash"], json.dumps(data_cfg, sort_keys=True), type(model).__name__, tuple(model.decoder_inputs))
    )
    t0 = time.perf_counter()
    train_stats = engine.train(
        model,
        train_set,
        schedule,
        seed=seed,
        desc=f"{run['variant']} s{seed}",
        feature_cache=_FEATURES,
        cache_key=cache_key,
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
    }
    metrics = engine.evaluate(model, val_set, **evaluation)
    eval_s = metrics.pop("eval_s")
    holdout_metrics = None
    if holdout_set is not None:  # for choices (schedules, learning rates); the report never shows it
        holdout_metrics = engine.evaluate(model, holdout_set, **evaluation)
        holdout_metrics.pop("eval_s")
    record = {
        "schema": RECORD_VERSION,
        "status": "ok",
        "ablation": run["ablation"],
        "scale": run["scale"],
        "scale_tag": run["scale_tag"],
        "variant": run["variant"],
        "seed": seed,
        "config_hash": run["config_hash"],
        "config": config,
        "overrides": run.get("overrides", {}),
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
        "training": {
            "steps": train_stats["steps"],
            "final_loss": train_stats["final_loss"],
            "loss_curve": train_stats["loss_curve"],
        },
        "pretrained_backbone": None
        if pre_meta is None
        else {"hash": pre_meta["hash"], "steps": pre_meta["steps"], "final_loss": pre_meta["final_loss"]},
        "provenance": provenance(code_fingerprint(model, config)),
    }
    write_atomic(Path(run["path"]), dumps(record))
    return record


def paper_model_complexity(model_cfg: dict, num_classes: int, input_size: tuple[int, int]) -> dict:
    """Parameters, weights and MACs per part of a model at the paper's configuration, counted on
    the meta device (no weights are created or loaded)."""
    net = build_on_meta(model_cfg, num_classes)
    return complexity_record(net, input_size)
