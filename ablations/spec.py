"""Loading and strict validation of ablation spec files (TOML, one per paper table).

A spec has top-level metadata (``id``, ``title``, ``source``, ``paper_table``, ``claim``,
``metric``, ``baseline``, ``headline``, ``[report]``, ``[paper_config]``), shared
``[defaults]``, one block per scale (``[scales.mini]``, ``[scales.paper]``) and
``[[variants]]``. ``[[report.checks]]`` states the paper's claims as pairwise comparisons
(``a`` vs ``b`` on a metric, ``expect`` greater/less/similar) that the report tests against
seed noise. ``[paper_config]`` (``in_channels``, ``num_classes``; per variant also
``paper_config.stack_width``) asks each run to also count its head's weights at the paper's
configuration, for tables that print parameter counts. A run config is
``defaults`` <- ``scales.<scale>`` <- the variant, merged section by section (``model``,
``data``, ``pretrain``, ``train``, ``eval``). Every problem is reported as
``<file>: <key path>: <what was expected>, got <value>`` before any training starts.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from seg_core.backbones import BACKBONES
from seg_core.data.synthetic import ShapesConfig
from seg_core.engine import TrainConfig
from seg_core.heads import HEADS
from seg_core.losses import LOSSES, CompositeLoss
from seg_core.models import MODELS
from seg_core.registry import DATASETS

SPEC_DIR = Path(__file__).parent / "specs"
SECTIONS = ("model", "data", "pretrain", "train", "eval")
METRICS = ("miou", "pixel_acc", "mean_acc", "boundary_miou", "interior_miou", "boundary_pixel_acc", "interior_pixel_acc")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class SpecError(ValueError):
    """A malformed spec: names the file, the key path and what was expected."""

    def __init__(self, file: str | Path, path: str, message: str) -> None:
        self.file, self.path, self.message = str(file), path, message
        super().__init__(f"{file}: {path}: {message}")


def slugify(name: str) -> str:
    """Variant name -> file-name-safe slug (``"k=15"`` -> ``"k-15"``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ---------------------------------------------------------------------------------- types
def _type_name(t: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
            dict: "a table", list: "an array"}.get(t, getattr(t, "__name__", str(t)))


def _check_type(value: Any, expected: Any) -> str | None:
    """None when ``value`` fits ``expected`` (a type or a typing hint), else what was expected."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(expected) if a is not type(None)]
        if any(_check_type(value, a) is None for a in options):
            return None
        return " or ".join(_type_name(typing.get_origin(a) or a) for a in options)
    if origin in (list, tuple, Sequence):
        if not isinstance(value, list):
            return "an array"
        (item,) = typing.get_args(expected)[:1] or (Any,)
        for v in value:
            if item is not Any and _check_type(v, item) is not None:
                plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
                return f"an array of {plural.get(item, _type_name(item))}"
        return None
    if origin in (dict, Mapping):
        return None if isinstance(value, dict) else "a table"
    if expected is Any:
        return None
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "a number"
    if expected is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    return None if isinstance(value, expected) else _type_name(expected)


def _builder_options(builder) -> dict[str, tuple[Any, bool]]:
    """Keyword options of a registered builder: name -> (type hint, required)."""
    hints = typing.get_type_hints(builder)
    out = {}
    for name, p in inspect.signature(builder).parameters.items():
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            out[name] = (hints.get(name, Any), p.default is inspect.Parameter.empty)
    return out


def _dataclass_options(cls) -> dict[str, tuple[Any, bool]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], False) for f in fields(cls)}


# The keys a run config section may hold (beyond builder/dataclass-derived ones).
_DATA_COMMON = {"name": (str, True), "train_images": (int, True), "val_images": (int, True), "holdout_images": (int, False),
                "seed": (int, False), "root": (str, False)}
_PRETRAIN = {"images": (int, True), "steps": (int, True), "batch_size": (int, True), "lr": (float, True),
             "momentum": (float, False), "weight_decay": (float, False), "poly_power": (float, False),
             "seed": (int, False)}
_EVAL = {"batch_size": (int, False), "band_width": (float, False)}


def _dataset_options(name: str) -> dict[str, tuple[Any, bool]]:
    opts = dict(_DATA_COMMON)
    if name == "shapes":
        opts.update(_dataclass_options(ShapesConfig))
    else:
        for key, (hint, _) in _builder_options(DATASETS.get(name)).items():
            if key not in ("split",):
                opts.setdefault(key, (hint, False))
    return opts


def _check_table(file, path: str, table: dict, options: dict[str, tuple[Any, bool]], *, partial: bool) -> None:
    if not isinstance(table, dict):
        raise SpecError(file, path, f"expected a table, got {table!r}")
    for key, value in table.items():
        if key not in options:
            raise SpecError(file, f"{path}.{key}", f"unknown key; expected one of {sorted(options)}")
        expected = _check_type(value, options[key][0])
        if expected is not None:
            raise SpecError(file, f"{path}.{key}", f"expected {expected}, got {value!r}")
    if not partial:
        for key, (_, required) in options.items():
            if required and key not in table:
                raise SpecError(file, f"{path}.{key}", "missing required key")


# ------------------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class Variant:
    name: str
    slug: str
    sections: dict
    paper: dict
    index: int
    paper_config: dict


@dataclass(frozen=True)
class Spec:
    file: Path
    id: str
    title: str
    source: str
    paper_table: str
    claim: str
    metric: str
    baseline: str
    headline: str | None
    report: dict
    paper_config: dict
    defaults: dict
    scales: dict
    variants: tuple[Variant, ...]

    def paper_config_for(self, variant: Variant) -> dict | None:
        """Head options at the paper's configuration for ``variant`` (None: not requested)."""
        if not self.paper_config:
            return None
        return {**self.paper_config, **variant.paper_config}

    def seeds(self, scale: str) -> list[int]:
        return list(self.scales[scale]["seeds"])

    def resolve(self, scale: str, variant: Variant) -> tuple[dict, dict[str, str]]:
        """Merged sections for (scale, variant) and, per leaf key, the spec path it came from."""
        merged: dict[str, dict] = {s: {} for s in SECTIONS}
        origin: dict[str, str] = {}
        layers = [("defaults", self.defaults), (f"scales.{scale}", self.scales[scale]),
                  (f"variants[{variant.index}]", variant.sections)]
        for prefix, layer in layers:
            for section in SECTIONS:
                for key, value in layer.get(section, {}).items():
                    merged[section][key] = copy.deepcopy(value)
                    origin[f"{section}.{key}"] = f"{prefix}.{section}.{key}"
        return merged, origin


_TOP = {"id": (str, True), "title": (str, True), "source": (str, True), "paper_table": (str, True),
        "claim": (str, True), "metric": (str, True), "baseline": (str, True), "headline": (str, False),
        "report": (dict, False), "paper_config": (dict, False), "defaults": (dict, True), "scales": (dict, True),
        "variants": (list, True)}
_REPORT = {"x": (str, False), "x_label": (str, False), "x_default": (float, False), "notes": (str, False),
           "discussion": (str, False),
           "checks": (list, False), "columns": (list[str], False), "series": (str, False), "series_labels": (dict, False)}
_CHECK = {"claim": (str, True), "kind": (str, False), "a": (str, False), "b": (str, False), "metric": (str, False),
          "expect": (str, False), "margin": (float, False), "min_rho": (float, False)}
EXPECTATIONS = ("greater", "less", "similar")
CHECK_KINDS = ("pairwise", "ordering")
_PAPER_CONFIG = {"in_channels": (int, True), "num_classes": (int, True)}
_VARIANT_PAPER_CONFIG = {"stack_width": (int, False)}
_SCALE_META = {"seeds": (list[int], True), "description": (str, False)}
_SECTION_TABLES = {s: (dict, False) for s in SECTIONS}


def load_spec(path: str | Path) -> Spec:
    """Parse and fully validate one spec file; raises :class:`SpecError`."""
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(file, "<file>", "no such spec file") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(file, "<toml>", f"not valid TOML ({e})") from None

    _check_table(file, "<top>", raw, _TOP, partial=False)
    if not _SLUG.match(raw["id"]):
        raise SpecError(file, "id", f"expected a lower-case slug like 'gcn-k', got {raw['id']!r}")
    if raw["metric"] not in METRICS:
        raise SpecError(file, "metric", f"expected one of {list(METRICS)}, got {raw['metric']!r}")
    _check_table(file, "report", raw.get("report", {}), _REPORT, partial=True)
    _check_table(file, "defaults", raw["defaults"], _SECTION_TABLES, partial=True)
    _check_sections_shallow(file, "defaults", raw["defaults"])

    scales = raw["scales"]
    if not scales:
        raise SpecError(file, "scales", "expected at least one scale block, e.g. [scales.mini]")
    if "mini" not in scales:
        raise SpecError(file, "scales.mini", "missing: every spec needs the mini scale")
    for name, block in scales.items():
        path = f"scales.{name}"
        if not _SLUG.match(name):
            raise SpecError(file, path, "scale names must be lower-case slugs")
        _check_table(file, path, block, {**_SCALE_META, **_SECTION_TABLES}, partial=False)
        seeds = block["seeds"]
        if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
            raise SpecError(file, f"{path}.seeds", f"expected a non-empty array of distinct integers >= 0, got {seeds!r}")
        _check_sections_shallow(file, path, block)

    variants_raw = raw["variants"]
    if not variants_raw:
        raise SpecError(file, "variants", "expected at least one [[variants]] entry")
    variants, names, slugs = [], set(), {}
    for i, v in enumerate(variants_raw):
        path = f"variants[{i}]"
        _check_table(file, path, v, {"name": (str, True), "paper": (dict, False), "paper_config": (dict, False),
                                     **_SECTION_TABLES}, partial=False)
        if "paper_config" in v:
            if "paper_config" not in raw:
                raise SpecError(file, f"{path}.paper_config", "needs a top-level [paper_config] (in_channels, num_classes)")
            _check_table(file, f"{path}.paper_config", v["paper_config"], _VARIANT_PAPER_CONFIG, partial=True)
        name = v["name"].strip()
        if not name:
            raise SpecError(file, f"{path}.name", "expected a non-empty name")
        if name in names:
            raise SpecError(file, f"{path}.name", f"duplicate variant name {name!r}")
        slug = slugify(name)
        if not slug or slug in slugs:
            raise SpecError(file, f"{path}.name", f"name {name!r} gives the file slug {slug!r}, already used by {slugs.get(slug)!r}")
        names.add(name)
        slugs[slug] = name
        for key, value in v.get("paper", {}).items():
            if _check_type(value, float) is not None:
                raise SpecError(file, f"{path}.paper.{key}", f"expected a number (the paper's value), got {value!r}")
        sections = {s: v[s] for s in SECTIONS if s in v}
        _check_sections_shallow(file, path, sections)
        variants.append(Variant(name, slug, sections, dict(v.get("paper", {})), i, dict(v.get("paper_config", {}))))

    for key in ("baseline", "headline"):
        if key in raw and raw[key] not in names:
            raise SpecError(file, key, f"expected the name of a variant ({sorted(names)}), got {raw[key]!r}")
    _check_report(file, raw.get("report", {}), names)
    if "paper_config" in raw:
        _check_table(file, "paper_config", raw["paper_config"], _PAPER_CONFIG, partial=False)

    spec = Spec(file, raw["id"], raw["title"], raw["source"], raw["paper_table"], raw["claim"], raw["metric"],
                raw["baseline"], raw.get("headline"), raw.get("report", {}), raw.get("paper_config", {}),
                raw["defaults"], scales, tuple(variants))
    for scale in scales:
        for variant in spec.variants:
            merged, origin = spec.resolve(scale, variant)
            validate_run_sections(file, merged, origin)
            if spec.paper_config and merged["model"]["name"] != "single_head":
                raise SpecError(file, "paper_config", "counts a single_head model's head; "
                                f"variant {variant.name!r} uses model {merged['model']['name']!r}")
            if spec.paper_config and "stack_width" in merged["model"] and "stack_width" not in variant.paper_config:
                raise SpecError(file, f"variants[{variant.index}].paper_config.stack_width",
                                "missing: the variant sets model.stack_width, so give the paper's width m too")
    return spec


def _check_report(file, report: dict, names: set[str]) -> None:
    checks = report.get("checks", [])
    if not checks:
        raise SpecError(file, "report.checks", "expected at least one [[report.checks]] entry: the claims the table is judged on")
    for i, check in enumerate(checks):
        path = f"report.checks[{i}]"
        _check_table(file, path, check, _CHECK, partial=False)
        kind = check.get("kind", "pairwise")
        if kind not in CHECK_KINDS:
            raise SpecError(file, f"{path}.kind", f"expected one of {list(CHECK_KINDS)}, got {kind!r}")
        if check.get("metric", "miou") not in METRICS:
            raise SpecError(file, f"{path}.metric", f"expected one of {list(METRICS)}, got {check['metric']!r}")
        if kind == "ordering":
            for key in ("a", "b", "expect", "margin"):
                if key in check:
                    raise SpecError(file, f"{path}.{key}", "an ordering check compares every variant; it takes no a, b, expect or margin")
            if "min_rho" not in check:
                raise SpecError(file, f"{path}.min_rho", "missing: the rank correlation (Spearman) the ordering needs, e.g. 0.8")
            if not -1 <= check["min_rho"] <= 1:
                raise SpecError(file, f"{path}.min_rho", f"expected a number in [-1, 1], got {check['min_rho']!r}")
            continue
        for key in ("a", "b"):
            if key not in check:
                raise SpecError(file, f"{path}.{key}", "missing required key")
            if check[key] not in names:
                raise SpecError(file, f"{path}.{key}", f"expected the name of a variant ({sorted(names)}), got {check[key]!r}")
        if check["a"] == check["b"]:
            raise SpecError(file, f"{path}.b", f"compares {check['a']!r} with itself")
        if "min_rho" in check:
            raise SpecError(file, f"{path}.min_rho", "applies to kind = \"ordering\" only")
        expect = check.get("expect", "greater")
        if expect not in EXPECTATIONS:
            raise SpecError(file, f"{path}.expect", f"expected one of {list(EXPECTATIONS)}, got {expect!r}")
        if expect == "similar" and "margin" not in check:
            raise SpecError(file, f"{path}.margin", "missing: an 'about equal' claim needs its equivalence margin in points")
        if expect == "similar" and check["margin"] <= 0:
            raise SpecError(file, f"{path}.margin", f"expected a positive number of points, got {check['margin']!r}")
        if expect != "similar" and "margin" in check:
            raise SpecError(file, f"{path}.margin", "applies to expect = \"similar\" only")
    for i, column in enumerate(report.get("columns", [])):
        if column not in METRICS:
            raise SpecError(file, f"report.columns[{i}]", f"expected one of {list(METRICS)}, got {column!r}")


def _check_sections_shallow(file, prefix: str, block: dict) -> None:
    """Each section present must be a table (its keys are checked after merging)."""
    for section in SECTIONS:
        if section in block and not isinstance(block[section], dict):
            raise SpecError(file, f"{prefix}.{section}", f"expected a table, got {block[section]!r}")


def validate_run_sections(file, merged: dict, origin: dict[str, str]) -> None:
    """Semantic checks of one resolved run config; errors point at where a value was set."""

    def where(key: str) -> str:
        return origin.get(key, f"<resolved>.{key}")

    def fail(key: str, message: str) -> None:
        raise SpecError(file, where(key), message)

    def check(section: str, options: dict) -> None:
        table = merged[section]
        for key, value in table.items():
            if key not in options:
                fail(f"{section}.{key}", f"unknown key; expected one of {sorted(options)}")
            expected = _check_type(value, options[key][0])
            if expected is not None:
                fail(f"{section}.{key}", f"expected {expected}, got {value!r}")
        for key, (_, required) in options.items():
            if required and key not in table:
                raise SpecError(file, f"{section}.{key}", "missing required key (in defaults, the scale block or the variant)")

    # model
    model = merged["model"]
    if "name" not in model:
        raise SpecError(file, "model.name", "missing required key")
    if model["name"] not in MODELS:
        fail("model.name", f"unknown model {model['name']!r}; expected one of {MODELS.names()}")
    model_opts = {k: v for k, v in _builder_options(MODELS.get(model["name"])).items() if k != "num_classes"}
    model_opts["name"] = (str, True)
    check("model", model_opts)
    if "backbone" in model and model["backbone"] not in BACKBONES:
        fail("model.backbone", f"unknown backbone {model['backbone']!r}; expected one of {BACKBONES.names()}")
    if "head" in model and model["head"] not in HEADS:
        fail("model.head", f"unknown head {model['head']!r}; expected one of {HEADS.names()}")
    if "k" in model and (model["k"] < 1 or model["k"] % 2 == 0):
        fail("model.k", f"expected a positive odd kernel size (padding (k-1)//2 must centre it), got {model['k']}")
    if model.get("head") not in (None, "pointwise") and "k" not in model:
        raise SpecError(file, "model.k", f"missing: head {model['head']!r} needs a kernel size k")
    if model.get("head") == "pointwise" and "k" in model:
        fail("model.k", "the pointwise (1x1) head takes no k")
    if "stack_width" in model and model.get("head") != "stack3x3":
        fail("model.stack_width", f"applies to head 'stack3x3' only, not {model.get('head')!r}")
    if "backbone" in model:
        bb_opts = _builder_options(BACKBONES.get(model["backbone"]))
        for key, value in model.get("backbone_options", {}).items():
            if key not in bb_opts:
                fail("model.backbone_options", f"unknown option {key!r} for backbone {model['backbone']!r}; expected one of {sorted(bb_opts)}")
            expected = _check_type(value, bb_opts[key][0])
            if expected is not None:
                fail("model.backbone_options", f"{key}: expected {expected}, got {value!r}")

    # data
    data = merged["data"]
    if "name" not in data:
        raise SpecError(file, "data.name", "missing required key")
    if data["name"] not in DATASETS:
        fail("data.name", f"unknown dataset {data['name']!r}; expected one of {DATASETS.names()}")
    check("data", _dataset_options(data["name"]))
    for key in ("train_images", "val_images"):
        if data.get(key, 1) < 1:
            fail(f"data.{key}", f"expected an integer >= 1, got {data[key]}")
    if data.get("holdout_images", 0) < 0:
        fail("data.holdout_images", f"expected an integer >= 0, got {data['holdout_images']}")
    if data["name"] == "shapes":
        knobs = {k: v for k, v in data.items() if k in {f.name for f in fields(ShapesConfig)}}
        try:
            ShapesConfig(**knobs)
        except ValueError as e:
            raise SpecError(file, where(f"data.{next(iter(knobs), 'name')}").rsplit(".", 1)[0], str(e)) from None

    # pretrain, train, eval
    if merged["pretrain"]:
        check("pretrain", _PRETRAIN)
    train_opts = _dataclass_options(TrainConfig)
    check("train", train_opts)
    try:
        TrainConfig(**merged["train"])
    except (ValueError, TypeError) as e:
        raise SpecError(file, where(f"train.{next(iter(merged['train']), 'steps')}").rsplit(".", 1)[0], str(e)) from None
    if "loss" in merged["train"]:
        try:
            CompositeLoss.from_config(merged["train"]["loss"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            fail("train.loss", f"expected {{name = {{type = <one of {sorted(LOSSES)}>, weight = <number>, output = <model output>}}}}; {e}")
    check("eval", _EVAL)
    if merged["eval"].get("band_width", 0) < 0:
        fail("eval.band_width", f"expected a number >= 0 (px), got {merged['eval']['band_width']}")


def spec_paths(directory: Path = SPEC_DIR) -> list[Path]:
    return sorted(directory.glob("*.toml"))


def find_spec(ablation_id: str, directory: Path = SPEC_DIR) -> Path:
    path = directory / f"{ablation_id}.toml"
    if not path.exists():
        known = ", ".join(p.stem for p in spec_paths(directory)) or "none"
        raise SpecError(path, "<file>", f"no ablation {ablation_id!r}; known: {known}")
    return path
