"""Execute one resolved run: the protocol (:mod:`ablations.protocol`) plus what the driver keeps
around it: the pretrained-backbone cache, the result record and its provenance.

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

from ablations.codehash import BODY, Project
from ablations.protocol import (  # noqa: F401  (re-exported for the runner and the tests)
    PRETRAIN_THREADS,
    ROOT,
    RUN_THREADS,
    SIZE_KEYS,
    complexity_record,
    dataset,
    dataset_kwargs,
    pretrain_backbone,
    resolve_root,
    run,
)
from ablations.schema import RECORD_VERSION
from ablations.store import config_hash, dumps, write_atomic
from ablations.trunks import load_committed, recipe, trunk_paths, weights_sha256, write_trunk
from ablations.validate import build_on_meta, dataset_facts
from seg_core.backbones import weights_enum
from seg_core.models.pretraining import pretraining_network
from seg_core.registry import (
    BACKBONES,
    DATASETS,
    EVALUATIONS,
    INFERENCE,
    INPUTS,
    LOSSES,
    METRIC_FAMILIES,
    MODELS,
    POSTPROCESSORS,
    TARGETS,
)

# A run's code: the definitions its roots reach (:mod:`ablations.codehash`). The roots: the
# protocol's ``run``, and every project object the config and the model name (the classes of the
# model's modules, the builders, the dataset, losses, targets, inputs, post-processor, inference
# and metrics) or that the caller adds (``extra``: evaluations, the pretraining procedure).
PROTOCOL_ROOTS = (("ablations.protocol", "run"),)


def _root(obj: Any) -> tuple[str, str]:
    """(module, top-level name) of a class or function; a lambda is in its module's other
    statements (a registration call)."""
    name = obj.__qualname__.split(".")[0]
    return obj.__module__, BODY if name == "<lambda>" else name


def code_fingerprint(
    model: torch.nn.Module, config: dict, extra: tuple = (), *, protocol: bool = True
) -> dict[str, str]:
    """``{path::definition: hash}`` of the code that built ``model`` and used ``config``'s parts,
    with the protocol's ``run`` (``protocol``) and the objects in ``extra``."""
    objects = [*extra, *(type(m) for m in model.modules())]
    if "model" in config:  # the builders that assembled the model (their code shapes it too)
        if "name" in config["model"]:
            objects.append(MODELS.get(config["model"]["name"]))
        if config["model"].get("backbone") in BACKBONES:
            objects.append(BACKBONES.get(config["model"]["backbone"]))
    objects.append(DATASETS.get(config["data"]["name"]))
    for term in config["train"].get("loss", {}).values():
        if term.get("type") in LOSSES:
            objects.append(LOSSES.get(term["type"]))
        if term.get("target", "label") in TARGETS:  # an extra target's maker (e.g. boundary maps)
            objects.append(TARGETS.get(term["target"]))
    objects.extend(INPUTS.get(name) for name in getattr(model, "extra_inputs", ()) if name in INPUTS)
    ev = config.get("eval", {})
    if ev.get("postprocess"):
        objects.append(POSTPROCESSORS.get(ev["postprocess"]["type"]))
    if ev.get("inference", {}).get("type") in INFERENCE:
        objects.append(INFERENCE.get(ev["inference"]["type"]))
    objects.extend(METRIC_FAMILIES.get(name) for name in ev.get("metrics", []))
    roots = {_root(obj) for obj in objects} | set(PROTOCOL_ROOTS if protocol else ())
    return _project().fingerprint(sorted(roots))


def run_fingerprint(model: torch.nn.Module, config: dict, evaluations: tuple = ()) -> dict[str, str]:
    """A run's code: the protocol, its model, data, losses and evaluations, and, for a run from
    a trunk pretrained here and not committed, the code that pretrains it (``pretrain_config``'s;
    a committed trunk is identified by its weights' digest instead, :mod:`ablations.trunks`)."""
    code = code_fingerprint(model, config, evaluations)
    pre_cfg = pretrain_config(config)
    if pre_cfg is None or trunk_paths(pre_cfg)[1].is_file():  # a committed trunk: its digest, not its code
        return code
    return dict(sorted({**code, **pre_cfg["code"]}.items()))


def config_fingerprint(config: dict) -> dict[str, str]:
    """:func:`run_fingerprint` of a run config, its model built on the meta device (what a run
    of this config records; no weights made)."""
    classes, _ = dataset_facts(config["data"])
    model = build_on_meta(config["model"], len(classes))
    evaluations = tuple(EVALUATIONS.get(k) for k, v in config.get("eval", {}).items() if k in EVALUATIONS and v)
    return run_fingerprint(model, config, evaluations)


@lru_cache(maxsize=1)
def _project() -> Project:
    return Project(ROOT)


@lru_cache(maxsize=4)
def calibration_gflops(threads: int) -> float:
    """fp32 GFLOP/s of a 512 x 512 matmul on ``threads`` threads (median of 5 x 10): a figure
    of the machine's speed at the time, so that run times compare across machines (measured
    once per process and thread count; :func:`measure_gflops` measures again)."""
    return measure_gflops()


def measure_gflops() -> float:
    """The calibration figure, measured now on the current thread count."""
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
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "cudnn": {
            "benchmark": torch.backends.cudnn.benchmark,
            "deterministic": torch.backends.cudnn.deterministic,
            "version": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        },
        "threads": threads,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


# ------------------------------------------------------------------------- pretraining
def pretrain_data(config: dict) -> dict:
    """The data a backbone is pretrained on: the run's data section, with ``pretrain.data``'s keys
    in place of its own (pretraining data can be a dataset of its own)."""
    return {**config["data"], **config["pretrain"].get("data", {})}


def trunk_checkpoint(config: dict) -> Path | None:
    """``pretrain.checkpoint``: the trunk's weights from a file (a relative path is the project's),
    for trunk weights no weights enum publishes."""
    name = (config.get("pretrain") or {}).get("checkpoint")
    return None if name is None else resolve_root(name)


def require_checkpoint(config: dict) -> None:
    """The trunk checkpoint exists, loads, and fits the backbone (same keys and shapes)."""
    path = trunk_checkpoint(config)
    if path is None:
        return
    if not path.is_file():
        raise MissingWeights(
            f"{path}: no trunk checkpoint here (pretrain.checkpoint); save the trained backbone's state_dict "
            "there with torch.save (the suite never downloads)"
        )
    try:
        state = torch.load(path, map_location="meta", weights_only=True)
    except Exception as e:  # noqa: BLE001  (truncated zip, pickle error: all mean "not a checkpoint")
        raise MissingWeights(f"{path}: not a readable state_dict ({type(e).__name__}: {e})") from None
    model = config["model"]
    classes, _ = dataset_facts(config["data"])
    expected = {k: tuple(v.shape) for k, v in build_on_meta(model, len(classes)).backbone.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) else {}
    if found != expected:
        missing = sorted(set(expected) - set(found))[:3]
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])[:3]
        raise MissingWeights(
            f"{path}: does not fit backbone {model['backbone']} {json.dumps(model.get('backbone_options', {}))}"
            + (f"; missing {missing}" if missing else "")
            + (f"; other shapes at {wrong}" if wrong else "")
        )


def pretrain_config(config: dict) -> dict | None:
    """What determines a run's pretrained backbone: backbone, data knobs, schedule, and code
    (None without pretraining, or with the trunk's weights from a checkpoint)."""
    if not config.get("pretrain") or trunk_checkpoint(config) is not None:
        return None
    model = config["model"]
    schedule = {k: v for k, v in config["pretrain"].items() if k != "data"}
    data = pretrain_data(config)
    pre = {
        "backbone": model["backbone"],
        "backbone_options": model.get("backbone_options", {}),
        "data": {k: v for k, v in data.items() if k not in SIZE_KEYS[1:]},
        "pretrain": schedule,
        "threads": PRETRAIN_THREADS,
    }
    classes, _ = dataset_facts(data)
    with torch.device("meta"):
        net = pretraining_network(model["backbone"], _no_weights(model.get("backbone_options", {})), len(classes))
    pre["code"] = code_fingerprint(
        net,
        {"data": data, "train": {}, "model": {"backbone": model["backbone"]}},
        extra=(pretraining_network, pretrain_backbone),
        protocol=False,
    )
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
    except (OSError, ValueError) as e:
        return None, f"{meta_path}: unreadable ({type(e).__name__}: {e})"
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (a truncated zip, a pickle error...: all mean "damaged")
        return None, f"{weights}: unreadable ({type(e).__name__}: {e})"
    if not isinstance(meta, dict) or meta.get("hash") != config_hash(pre_cfg) or not isinstance(state, dict):
        return None, f"{meta_path}: not the metadata of this backbone"
    return meta, None


def ensure_pretrained(cache_dir: Path, pre_cfg: dict, log=lambda m: print(m, file=sys.stderr)) -> dict:
    """Pretrain (once, cached) the backbone of ``pre_cfg`` (:func:`ablations.protocol.pretrain_backbone`);
    returns its metadata. A damaged cache entry (a truncated ``.pt`` or ``.json``) is reported
    with its path and pretrained again."""
    meta, damaged = read_pretrained(cache_dir, pre_cfg)
    if meta is not None:
        return meta
    if damaged:
        log(f"warning: pretrained backbone cache damaged, pretraining again: {damaged}")
    state, stats = pretrain_backbone(pre_cfg)
    weights, meta_path = pretrain_paths(cache_dir, pre_cfg)
    meta = {
        "config": pre_cfg,
        "hash": config_hash(pre_cfg),
        "train_s": stats["train_s"],
        "final_loss": stats["final_loss"],
        "steps": stats["steps"],
        "loss_curve": stats.get("loss_curve", []),
    }
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(f".pt.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, weights)
    except BaseException:  # a full disk, Ctrl-C: no partial file left behind
        tmp.unlink(missing_ok=True)
        raise
    write_atomic(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def trunk_state(cache_dir: Path, pre_cfg: dict, log=lambda m: print(m, file=sys.stderr)) -> tuple[dict, dict]:
    """(state dict, the record's ``pretrained_backbone``) of a run's trunk: the committed one
    (:mod:`ablations.trunks`, digest checked) where there is one, else the cache's (pretrained
    once). The entry names the weights' digest either way, and the committed trunk by name."""
    committed = load_committed(pre_cfg)
    if committed is not None:
        state, meta = committed
        names = {"trunk": meta["trunk"], "sha256": meta["sha256"], "hash": meta["recipe_hash"]}
    else:
        meta = ensure_pretrained(cache_dir, pre_cfg, log)
        state = torch.load(pretrain_paths(cache_dir, pre_cfg)[0], map_location="cpu", weights_only=True)
        names = {"hash": meta["hash"], "sha256": weights_sha256(state)}
    return state, {**names, "steps": meta["steps"], "final_loss": meta["final_loss"]}


def _cached_same_recipe(cache_dir: Path, pre_cfg: dict) -> tuple[dict, dict] | None:
    """(state dict, cache metadata) of a cache entry pretrained from ``pre_cfg``'s recipe, under
    this code's key or an older one (the code fingerprint's format aside, the same recipe)."""
    current, _ = pretrain_paths(cache_dir, pre_cfg)
    candidates = sorted((cache_dir / "pretrained").glob("*.json"), key=lambda p: p.stem != current.stem)
    for meta_path in candidates:
        try:
            meta = json.loads(meta_path.read_text())
            if recipe(meta["config"]) != recipe(pre_cfg):
                continue
            state = torch.load(meta_path.with_suffix(".pt"), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001  (an unreadable entry is not this trunk)
            continue
        return state, meta
    return None


def _same_as_legacy(state: dict, stats: dict, pre_cfg: dict, results_dir: Path, known: list[str]):
    """Whether the records made from an uncommitted trunk of this recipe (cache keys other than
    ``known``) were made from these very weights: yields (the key, or None, and what was found).
    The check: the same final pretraining loss, then the record with the shortest run re-run from
    these weights, every metric the protocol makes equal to the record's bit for bit (the
    evaluations run after it, e.g. crops, are not repeated)."""
    groups: dict[str, list[dict]] = {}
    for path in sorted(results_dir.glob("*/*/*.json")):
        try:
            record = json.loads(path.read_text())
            pre = record.get("pretrained_backbone") or {}
            if record.get("status") != "ok" or "trunk" in pre or pre.get("hash") in known or "steps" not in pre:
                continue
            other = pretrain_config(record["config"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if other is not None and recipe(other) == recipe(pre_cfg):
            groups.setdefault(pre["hash"], []).append(record)
    digest = weights_sha256(state)  # as a run identifies them (its frozen features are cached by it)
    for key, records in sorted(groups.items()):
        if records[0]["pretrained_backbone"]["final_loss"] != stats["final_loss"]:
            loss = records[0]["pretrained_backbone"]["final_loss"]
            yield None, f"not the trunk of {len(records)} record(s) cached as {key[:12]} (final loss {loss})"
            continue
        record = min(records, key=lambda r: r["timing"]["wall_s"])
        _, numbers = run(record["config"], desc="same weights?", backbone_state=state, backbone_id=digest)
        metrics = numbers["metrics"]  # compared as a record stores them (NaN for a class with no pixels)
        same = "miou" in metrics and all(
            json.dumps(record["metrics"].get(k)) == json.dumps(v) for k, v in metrics.items()
        )
        found = "every metric bitwise equal" if same else "its metrics differ"
        yield (
            (key if same else None),
            (
                f"{'the' if same else 'not the'} trunk of {len(records)} record(s) cached as {key[:12]} "
                f"(same final loss; {record['ablation']} {record['variant']} seed {record['seed']} re-run: {found})"
            ),
        )


def remake_trunk(
    pre_cfg: dict, cache_dir: Path, *, replace: bool, command: str, results_dir: Path | None = None
) -> tuple[str, bool]:
    """``python -m ablations pretrain``'s work for one trunk; returns (what happened, whether the
    committed trunk is the one this code makes). Not committed yet: commit the exact weights of
    a cache entry of the same recipe (its key kept as a legacy hash, so that the records made
    from it can be linked to it), else pretrain now. Committed: pretrain again and compare;
    overwrite only with ``replace``. With ``results_dir``, records made from an older cache entry
    of the same recipe are checked against the new weights (:func:`_same_as_legacy`) and, where
    they are the same, their key joins the trunk's legacy hashes (``refingerprint`` links them)."""
    import platform as _platform

    machine = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": _platform.machine(),
        "threads": PRETRAIN_THREADS,
        "calibration_gflops": calibration_gflops(PRETRAIN_THREADS),
    }
    extra = {"command": command, "machine": machine}
    committed = load_committed(pre_cfg)
    if committed is None:
        found = _cached_same_recipe(Path(cache_dir), pre_cfg)
        if found is not None:
            state, cached = found
            stats = {k: cached.get(k) for k in ("final_loss", "steps", "train_s", "loss_curve")}
            legacy = [cached["hash"]]
            source = f"the weights of cache entry {cached['hash'][:12]}"
        else:
            state, stats = pretrain_backbone(pre_cfg)
            legacy = []
            source = f"pretrained now in {stats['train_s']:.0f} s"
        checks = []
        if results_dir is not None:
            for key, verdict in _same_as_legacy(state, stats, pre_cfg, Path(results_dir), legacy):
                checks.append(verdict)
                if key is not None:
                    legacy.append(key)
        meta = write_trunk(pre_cfg, state, stats, {**extra, "legacy_hashes": legacy})
        line = f"committed ({source}; weights {meta['sha256'][:12]}, final loss {meta['final_loss']})"
        return line + "".join(f"; {c}" for c in checks), True
    old_state, old = committed
    state, stats = pretrain_backbone(pre_cfg)
    digest = weights_sha256(state)
    if digest == old["sha256"]:
        return f"re-made bitwise identical (weights {digest[:12]}, final loss {stats['final_loss']})", True
    diff = max(
        (state[k].double() - old_state[k].double()).abs().max().item() for k in state if state[k].is_floating_point()
    )
    line = (
        f"re-made, differs from the committed trunk: max |w| difference {diff:.3g}, final loss "
        f"{stats['final_loss']} against {old['final_loss']}"
    )
    if not replace:
        return line + "; the committed trunk is kept (--replace writes this one)", False
    write_trunk(pre_cfg, state, stats, {**extra, "legacy_hashes": []})
    return line + "; replaced: the results made from the old trunk are now stale", False


# ---------------------------------------------------------------------------------- a run
def weights_file(model_cfg: dict) -> tuple[str, str, Path] | None:
    """(enum name, url, the file in the local torch hub cache) of a model's pretrained weights."""
    backbone = model_cfg.get("backbone")
    if backbone not in BACKBONES:
        return None
    try:
        enum = weights_enum(backbone, model_cfg.get("backbone_options") or {})
    except KeyError:  # no published weights: the validator has refused the name already
        return None
    if enum is None:
        return None
    return str(enum), enum.url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)


class MissingWeights(RuntimeError):
    pass


def require_weights(model_cfg: dict) -> None:
    """Pretrained weights are read from the local torch hub cache; the suite downloads nothing."""
    found = weights_file(model_cfg)
    if found is not None and not found[2].is_file():
        name, url, path = found
        raise MissingWeights(
            f"{path}: the weights {name} are not in the local torch hub cache (TORCH_HOME); "
            f"place the file from {url} there (the suite never downloads)"
        )


@lru_cache(maxsize=8)
def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def execute_run(
    run_: dict[str, Any], *, cache_dir: str, quiet: bool = False, shard=None, data_root: str | None = None
) -> dict:
    """Train and evaluate one run; write its result file atomically (the leader of a data-parallel
    run only); return the record. ``data_root`` replaces the spec's ``data.root`` for this execution
    (recorded in provenance; the config and its hash keep the spec's).

    Raises :class:`seg_core.engine.TrainingDiverged` (nothing written) when the loss diverges:
    the runner records the failure.
    """
    if quiet:
        os.environ["SEGBENCH_QUIET"] = "1"
    config = run_["config"]
    executed = config if data_root is None else {**config, "data": {**config["data"], "root": data_root}}
    pre_cfg = pretrain_config(config)
    state = trunk = None
    backbone_id = checkpoint = None
    if pre_cfg is not None:
        state, trunk = trunk_state(Path(cache_dir), pre_cfg)
        backbone_id = trunk["sha256"]
    elif trunk_checkpoint(config) is not None:
        path = trunk_checkpoint(config)
        state = torch.load(path, map_location="cpu", weights_only=True)
        checkpoint = {"checkpoint": str(path), "sha256": _sha256(path)}
        backbone_id = f"file:{checkpoint['sha256']}"
    model, numbers = run(
        executed,
        desc=f"{run_['variant']} s{config['seed']}",
        backbone_state=state,
        backbone_id=backbone_id,
        shard=shard,
    )
    post = {k: v for k, v in config.get("eval", {}).items() if k in EVALUATIONS and v}
    for name, value in post.items():  # evaluations of the trained model after the run's own
        numbers["metrics"].update(post_evaluation(name, value, model, executed, numbers, shard))
    found = weights_file(config["model"])
    record = {
        "schema": RECORD_VERSION,
        "status": "ok",
        "ablation": run_["ablation"],
        "scale": run_["scale"],
        "scale_tag": run_["scale_tag"],
        "variant": run_["variant"],
        "seed": config["seed"],
        "config_hash": run_["config_hash"],
        "config": config,
        "overrides": run_.get("overrides", {}),
        **({"trial": run_["trial"]} if run_.get("trial") else {}),
        **numbers,
        "model_info": model.describe() if hasattr(model, "describe") else {},
        "pretrained_backbone": checkpoint if trunk is None else trunk,
        "provenance": {
            **provenance(run_fingerprint(model, config, tuple(EVALUATIONS.get(n) for n in post))),
            **({"weights": {"name": found[0], "url": found[1], "sha256": _sha256(found[2])}} if found else {}),
            **({"data_root": data_root} if data_root is not None else {}),
            **({"world_size": shard.world} if shard is not None else {}),
        },
    }
    if shard is None or shard.leader:
        write_atomic(Path(run_["path"]), dumps(record))
    return record


def post_evaluation(name: str, value, model: torch.nn.Module, config: dict, numbers: dict, shard) -> dict:
    """The registered evaluation ``eval.<name> = value`` on the run's val images, with the run's
    evaluation settings (:data:`seg_core.registry.EVALUATIONS`)."""
    data, ev = config["data"], config.get("eval", {})
    return EVALUATIONS.get(name)(
        value,
        model,
        dataset(data, "val", data["val_images"]),
        num_classes=len(numbers["class_names"]),
        batch_size=ev.get("batch_size", 64),
        inference=ev.get("inference"),
        metrics=ev.get("metrics", ()),
        amp=config["train"].get("amp", "none"),
        shard=shard,
    )


def paper_model_complexity(
    model_cfg: dict, num_classes: int, input_size: tuple[int, int], eval_model: dict | None = None
) -> dict:
    """Parameters, weights and MACs per part of a model at the paper's configuration, counted on
    the meta device (no weights are created or loaded); ``eval_model`` reconfigures it as the
    run's evaluation does (``eval.model``: e.g. another output stride), so MACs are the
    evaluated model's."""
    net = build_on_meta(model_cfg, num_classes)
    if eval_model:
        net.reconfigure(**eval_model)
    return complexity_record(net, input_size)
