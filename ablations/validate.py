"""Semantic validation of a resolved run config, through ``seg_core`` (the driver knows no paper).

Models are built on the ``meta`` device (no weights, no computation) and run once, in training
mode, on a batch of the data's input size, so that every rule is the builders' own: a builder
raises :class:`~seg_core.registry.ConfigError` naming the option (``k``,
``backbone_options.output_stride``), and the error is reported at the spec line that set it.
The same pass yields the outputs the model produces (a loss term must read one of them) and
catches convolutions whose kernel is larger than the map they run on allows. Datasets are
checked through their registered metadata (options, ``check``, ``input_size``, class names),
without loading any data.
"""

from __future__ import annotations

import inspect
import json
import math
import typing
from collections.abc import Callable
from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ablations.protocol import postprocess_grid
from ablations.schema import MAX_SEED, SpecError, check_type
from seg_core.backbones import weights_enum
from seg_core.engine import TrainConfig
from seg_core.losses import CompositeLoss
from seg_core.metrics import SegmentationEvaluator
from seg_core.registry import (
    BACKBONES,
    DATASETS,
    EVALUATIONS,
    INFERENCE,
    INPUTS,
    METRIC_FAMILIES,
    MODELS,
    POSTPROCESSORS,
    TARGETS,
    ConfigError,
)

DATA_COMMON = {
    "name": (str, True),
    "train_images": (int, True),
    "val_images": (int, True),
    "holdout_images": (int, False),
    "seed": (int, False),
    "root": (str, False),
}
PRETRAIN = {
    "images": (int, True),
    "steps": (int, True),
    "batch_size": (int, True),
    "lr": (float, True),
    "momentum": (float, False),
    "weight_decay": (float, False),
    "poly_power": (float, False),
    "seed": (int, False),
    "data": (dict, False),
}
EVAL = {
    "model": (dict, False),
    "inference": (dict, False),
    "batch_size": (int, False),
    "band_width": (float, False),
    "postprocess": (dict, False),
    "metrics": (list[str], False),
    "workers": (int, False),
}
Locate = Callable[[str], tuple[str, str]]  # config key ("model.k") -> (file, spec key path)


def builder_options(builder) -> dict[str, tuple[Any, bool]]:
    """Keyword options of a registered builder: name -> (type hint, required)."""
    hints = typing.get_type_hints(builder)
    out = {}
    for name, p in inspect.signature(builder).parameters.items():
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            out[name] = (hints.get(name, Any), p.default is inspect.Parameter.empty)
    return out


def dataclass_options(cls) -> dict[str, tuple[Any, bool]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], False) for f in fields(cls)}


def locator(file: str | Path, origin: dict[str, str], where: Callable[[str], Path] | None = None) -> Locate:
    """Map a config key to the spec file and key path that set it (or its closest set parent)."""

    def locate(key: str) -> tuple[str, str]:
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            prefix = ".".join(parts[:n])
            if prefix in origin:
                path = ".".join([origin[prefix], *parts[n:]])
                if path.startswith("override "):
                    return "<command line>", path.removeprefix("override ")
                return str(where(path) if where else file), path
        return str(file), f"<resolved>.{key}"

    return locate


class _Checker:
    def __init__(self, locate: Locate) -> None:
        self.locate = locate

    def fail(self, key: str, message: str) -> SpecError:
        file, path = self.locate(key)
        return SpecError(file, path, message)

    def table(self, section: str, table: dict, options: dict[str, tuple[Any, bool]]) -> None:
        for key, value in table.items():
            if key not in options:
                raise self.fail(f"{section}.{key}", f"unknown key; expected one of {sorted(options)}")
            expected = check_type(value, options[key][0])
            if expected is not None:
                raise self.fail(f"{section}.{key}", f"expected {expected}, got {value!r}")
        for key, (_, required) in options.items():
            if required and key not in table:
                file, _ = self.locate(section)
                raise SpecError(
                    file,
                    f"{section}.{key}",
                    "missing required key (in defaults, the scale block, the variant or an override)",
                )

    def at_least(self, section: str, table: dict, keys: tuple[str, ...], minimum: float, strict: bool = False) -> None:
        for key in keys:
            if key in table and (table[key] <= minimum if strict else table[key] < minimum):
                raise self.fail(f"{section}.{key}", f"expected {'>' if strict else '>='} {minimum}, got {table[key]!r}")


def dataset_options(name: str) -> dict[str, tuple[Any, bool]]:
    options = dict(DATA_COMMON)
    metadata = DATASETS.metadata(name)
    options.update(metadata.get("options", {}))
    for key, (hint, _) in builder_options(DATASETS.get(name)).items():
        if key not in ("split", "num_images"):
            options.setdefault(key, (hint, False))
    return options


def dataset_facts(data: dict) -> tuple[list[str], tuple[int, int]]:
    """Class names and input size of a data section (from the dataset's registered metadata)."""
    metadata = DATASETS.metadata(data["name"])
    own = {k: v for k, v in data.items() if k not in DATA_COMMON}
    return list(metadata["class_names"]), tuple(metadata["input_size"](own))


def _check_inference(c: _Checker, where: str, inference: dict) -> None:
    """An ``eval.inference`` table: a registered type, its builder's options (names, types,
    required ones) and the values it refuses, before any training (a nested ``inner`` too)."""
    kind = inference.get("type")
    if kind not in INFERENCE:
        raise c.fail(f"{where}.type", f"expected one of {INFERENCE.names()}, got {kind!r}")
    options = {k: v for k, v in inference.items() if k != "type"}
    c.table(where, options, builder_options(INFERENCE.get(kind)))
    if isinstance(options.get("inner"), dict):
        _check_inference(c, f"{where}.inner", options["inner"])
    try:
        INFERENCE.build(kind, **options)
    except ConfigError as e:
        raise c.fail(f"{where}.{e.key}", e.message) from None


def evaluated_size(data: dict) -> tuple[int, int]:
    """The size of the images a data section evaluates on: the dataset's ``eval_size`` where it
    registers one (e.g. Cityscapes' full 1024x2048 images), else its input size."""
    size_of = DATASETS.metadata(data["name"]).get("eval_size")
    if size_of is None:
        return dataset_facts(data)[1]
    return tuple(size_of({k: v for k, v in data.items() if k not in DATA_COMMON}))


def validate_run(config: dict, locate: Locate) -> None:
    """Check one resolved run config (sections model, data, pretrain, train, eval); raises
    :class:`SpecError` at the line that set the offending value."""
    c = _Checker(locate)
    data = config["data"]
    if "name" not in data:
        raise c.fail("data.name", "missing required key")
    if data["name"] not in DATASETS:
        raise c.fail("data.name", f"unknown dataset {data['name']!r}; expected one of {DATASETS.names()}")
    c.table("data", data, dataset_options(data["name"]))
    if "root" in data and "root" not in builder_options(DATASETS.get(data["name"])):
        raise c.fail("data.root", f"dataset {data['name']!r} is generated, not read from files: it takes no root")
    c.at_least("data", data, ("train_images", "val_images"), 1)
    c.at_least("data", data, ("holdout_images",), 0)
    if not 0 <= data.get("seed", 0) <= MAX_SEED:
        raise c.fail("data.seed", f"expected an integer in [0, {MAX_SEED}], got {data['seed']}")
    check = DATASETS.metadata(data["name"]).get("check")
    if check is not None:
        try:
            check({k: v for k, v in data.items() if k not in DATA_COMMON})
        except ConfigError as e:
            raise c.fail(f"data.{e.key}", e.message) from None
    class_names, input_size = dataset_facts(data)

    model = config["model"]
    if "name" not in model:
        raise c.fail("model.name", "missing required key")
    if model["name"] not in MODELS:
        raise c.fail("model.name", f"unknown model {model['name']!r}; expected one of {MODELS.names()}")
    options = {k: v for k, v in builder_options(MODELS.get(model["name"])).items() if k != "num_classes"}
    c.table("model", model, {**options, "name": (str, True)})
    _check_weights(c, model)
    outputs = meta_outputs(json.dumps(model, sort_keys=True), len(class_names), input_size, c)

    if config.get("pretrain") and "checkpoint" in config["pretrain"]:  # the trunk's weights from a file
        c.table("pretrain", config["pretrain"], {"checkpoint": (str, True)})
        if "backbone" not in model:
            raise c.fail(
                "pretrain.checkpoint", f"a trunk checkpoint needs a named backbone; {model['name']!r} has none"
            )
    elif config.get("pretrain"):
        pre = config["pretrain"]
        c.table("pretrain", pre, PRETRAIN)
        c.at_least("pretrain", pre, ("images", "steps", "batch_size"), 1)
        c.at_least("pretrain", pre, ("lr",), 0, strict=True)
        c.at_least("pretrain", pre, ("momentum", "weight_decay", "poly_power"), 0)
        if pre["batch_size"] > pre["images"]:
            raise c.fail(
                "pretrain.batch_size", f"expected at most pretrain.images ({pre['images']}), got {pre['batch_size']}"
            )
        if "backbone" not in model:
            raise c.fail(
                "pretrain", f"pretraining needs a model with a named backbone; model {model['name']!r} has none"
            )
        if "data" in pre:  # the pretraining dataset: the run's data section with these keys in place of its own
            other = {**data, **pre["data"]}
            if other["name"] not in DATASETS:
                raise c.fail(
                    "pretrain.data.name", f"unknown dataset {other['name']!r}; expected one of {DATASETS.names()}"
                )
            options = {k: o for k, o in dataset_options(other["name"]).items() if k != "name"}
            c.table(
                "pretrain.data",
                {k: v for k, v in pre["data"].items() if k != "name"},
                {k: (o[0], False) for k, o in options.items()},
            )
            check_data = DATASETS.metadata(other["name"]).get("check")
            if check_data is not None:
                try:
                    check_data({k: v for k, v in other.items() if k not in DATA_COMMON})
                except ConfigError as e:
                    raise c.fail(f"pretrain.data.{e.key}", e.message) from None

    train = config["train"]
    c.table("train", train, dataclass_options(TrainConfig))
    try:
        schedule = TrainConfig(**train)
    except ConfigError as e:
        raise c.fail(f"train.{e.key}", e.message) from None
    if schedule.sync_bn and schedule.device == "cpu":
        raise c.fail("train.sync_bn", "SyncBatchNorm synchronises CUDA processes: set train.device to 'cuda'")
    if schedule.batch_size > data["train_images"]:
        raise c.fail(
            "train.batch_size",
            f"expected at most data.train_images ({data['train_images']}), got {schedule.batch_size}",
        )
    try:
        criterion = CompositeLoss.from_config(schedule.loss)
    except ConfigError as e:
        raise c.fail(f"train.loss.{e.key}" if e.key != "loss" else "train.loss", e.message) from None
    for name in sorted(criterion.outputs - outputs):
        raise c.fail(
            "train.loss",
            f"a term reads output {name!r}, which model {model['name']!r} does not produce "
            f"(its outputs in training: {sorted(outputs)})",
        )
    for name in sorted(criterion.targets - {"label"}):
        if name not in TARGETS:
            raise c.fail(
                "train.loss", f"a term reads target {name!r}; known targets: label, {', '.join(TARGETS.names())}"
            )

    ev = config.get("eval", {})
    c.table("eval", ev, {**EVAL, **{n: (EVALUATIONS.metadata(n)["value_type"], False) for n in EVALUATIONS}})
    c.at_least("eval", ev, ("batch_size",), 1)
    c.at_least("eval", ev, ("band_width", "workers"), 0)
    post = ev.get("postprocess")
    if post is not None:
        if post.get("type") not in POSTPROCESSORS:
            raise c.fail("eval.postprocess.type", f"expected one of {POSTPROCESSORS.names()}, got {post.get('type')!r}")
        grid = postprocess_grid(post) or [post]
        if len(grid) > 1 and not data.get("holdout_images"):
            raise c.fail(
                "eval.postprocess", "a grid of settings is searched on held-out training data: set data.holdout_images"
            )
        check = POSTPROCESSORS.metadata(post["type"]).get("check")
        for setting in grid if check is not None else []:
            try:
                check({k: v for k, v in setting.items() if k != "type"})
            except ConfigError as e:
                raise c.fail(f"eval.postprocess.{e.key}", e.message) from None
    if ev.get("model"):  # options the trained model takes for evaluation (on a meta copy)
        try:
            build_on_meta(model, len(class_names)).reconfigure(**ev["model"])
        except ConfigError as e:
            raise c.fail(f"eval.model.{e.key}", e.message) from None
    inference = ev.get("inference")
    if inference is not None:
        _check_inference(c, "eval.inference", inference)
    if "band_width" in ev:  # a band wider than the image's diagonal is every pixel (and a huge kernel)
        size = evaluated_size(data)
        diagonal = math.hypot(*size)
        if ev["band_width"] > diagonal:
            raise c.fail(
                "eval.band_width",
                f"{ev['band_width']!r} px is wider than the {size[0]}x{size[1]} image's diagonal ({diagonal:.0f} px)",
            )
    for i, family in enumerate(ev.get("metrics", [])):
        if family not in METRIC_FAMILIES:
            raise c.fail("eval.metrics", f"item {i}: expected one of {METRIC_FAMILIES.names()}, got {family!r}")
        try:  # a family that cannot read this dataset's classes fails here, not after training
            METRIC_FAMILIES.build(family, num_classes=len(class_names))
        except ConfigError as e:
            raise c.fail("eval.metrics", f"item {i}: {e.message} (dataset {data['name']!r})") from None
    for name in EVALUATIONS:  # evaluations after the run's own, each under the eval key of its name
        if name in ev:
            try:
                EVALUATIONS.metadata(name)["check"](ev[name])
            except ConfigError as e:
                raise c.fail(f"eval.{name}", e.message) from None


def _check_weights(c: _Checker, model: dict) -> None:
    """Pretrained-weight names are checked against their enum without loading anything."""
    name = (model.get("backbone_options") or {}).get("pretrained")
    backbone = model.get("backbone")
    if name is None or backbone not in BACKBONES:
        return
    try:
        weights_enum(backbone, model.get("backbone_options") or {})
    except KeyError:
        raise c.fail(
            "model.backbone_options.pretrained",
            f"backbone {backbone!r} has no published weights; the mini scale pretrains its own",
        ) from None
    except ConfigError as e:
        raise c.fail("model.backbone_options.pretrained", e.message) from None


def build_on_meta(model: dict, num_classes: int) -> nn.Module:
    """The model of a config section on the meta device (no weights; no download either:
    pretrained weights are checked by name, not loaded)."""
    kwargs = {k: v for k, v in model.items() if k != "name"}
    if isinstance(kwargs.get("backbone_options"), dict):
        kwargs["backbone_options"] = {k: v for k, v in kwargs["backbone_options"].items() if k != "pretrained"}
    with torch.device("meta"):
        return MODELS.build(model["name"], num_classes=num_classes, **kwargs)


@lru_cache(maxsize=256)
def _meta_outputs(
    model_json: str, num_classes: int, input_size: tuple[int, int]
) -> tuple[frozenset[str], str | None, str | None]:
    """(training outputs, the key of a builder error and its message) for one model config."""
    model = json.loads(model_json)
    try:
        net = build_on_meta(model, num_classes)
    except ConfigError as e:
        return frozenset(), e.key, e.message
    except TypeError as e:
        return frozenset(), "", str(e)
    for name in getattr(net, "extra_inputs", ()):
        if name not in INPUTS:
            return frozenset(), "", f"the model needs input {name!r}, which no registered maker provides"
    too_large: list[tuple[int, str]] = []  # (the kernel's larger side, the message)

    def check_kernel(module: nn.Conv2d, args) -> None:
        # Undilated kernels only: a dilated 3x3 whose taps fall off a small map degenerates to a
        # smaller filter, which is legitimate (a rate too large degenerates towards 1x1); a k x k kernel wider than
        # 2 x map - 1 is not, and such kernels crashed torch's backward.
        if any(d != 1 for d in module.dilation):
            return
        size = args[0].shape[-2:]
        for extent, side in zip(_extent(module), size):
            if extent > 2 * side - 1:
                too_large.append(
                    (
                        max(module.kernel_size),
                        f"a {tuple(module.kernel_size)} convolution (dilation {tuple(module.dilation)}) "
                        f"on a {tuple(size)} map: its extent {extent} is beyond 2 x {side} - 1, so some of "
                        "its taps can never meet the input",
                    )
                )

    hooks = [m.register_forward_pre_hook(check_kernel) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            outputs = net.train()(torch.zeros(2, 3, *input_size, device="meta"))
    except (RuntimeError, ValueError) as e:  # a map that shrinks to nothing, an incompatible size
        return frozenset(), "", f"does not run on {input_size[0]}x{input_size[1]} inputs ({str(e).splitlines()[0]})"
    finally:
        for h in hooks:
            h.remove()
    if too_large:  # blamed on the model option that sets that kernel size, where one option does
        kernel, message = too_large[0]
        keys = [k for k, v in model.items() if type(v) is int and v == kernel]
        return frozenset(), keys[0] if len(keys) == 1 else "", message
    return frozenset(outputs), None, None


def _extent(conv: nn.Conv2d) -> tuple[int, int]:
    return tuple(d * (k - 1) + 1 for k, d in zip(conv.kernel_size, conv.dilation))


def meta_outputs(model_json: str, num_classes: int, input_size: tuple[int, int], c: _Checker) -> set[str]:
    outputs, key, message = _meta_outputs(model_json, num_classes, tuple(input_size))
    if message is not None:
        raise c.fail(f"model.{key}" if key else "model", message)
    return set(outputs)


def metric_names(configs: list[dict]) -> set[str]:
    """The metric names evaluation produces for these run configs: the confusion-matrix metrics
    and those of the metric families they name (each family declares its ``metrics``)."""
    names = set(SegmentationEvaluator.METRICS)
    for config in configs:
        if config.get("eval", {}).get("postprocess"):  # the predictions before post-processing too
            names.update(f"raw_{m}" for m in SegmentationEvaluator.METRICS)
        families = config.get("eval", {}).get("metrics", [])
        for family in families:
            names.update(METRIC_FAMILIES.metadata(family).get("metrics", ()))
        for name in EVALUATIONS:
            if config.get("eval", {}).get(name):
                names.update(EVALUATIONS.metadata(name)["metrics"](config["eval"][name], families))
    return names


def validate_metrics(spec, configs: list[dict]) -> None:
    """The spec's metric, its checks' and its report columns' metrics must be ones its runs produce."""
    known = metric_names(configs)
    uses = [("metric", spec.metric)]
    uses += [
        (f"report.checks[{i}].metric", c["metric"])
        for i, c in enumerate(spec.report.get("checks", []))
        if "metric" in c
    ]
    uses += [
        (f"report.checks[{i}].b_metric", c["b_metric"])
        for i, c in enumerate(spec.report.get("checks", []))
        if "b_metric" in c
    ]
    uses += [
        (f"report.checks[{i}].base_metric", c["base_metric"])
        for i, c in enumerate(spec.report.get("checks", []))
        if "base_metric" in c
    ]
    uses += [(f"report.columns[{i}]", c) for i, c in enumerate(spec.report.get("columns", []))]
    for path, metric in uses:
        if metric not in known:
            raise spec.error(path, f"expected a metric the runs produce ({', '.join(sorted(known))}), got {metric!r}")
