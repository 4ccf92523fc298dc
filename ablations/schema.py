"""The one schema of spec files and result records (stdlib only; the driver and the report both
load through it, so both give the same errors).

**Spec files** (TOML, one per paper table; :data:`SPEC_VERSION`). Two kinds:

* ``kind = "ablation"`` (the default): ``id``, ``title``, ``source``, ``paper_table``,
  ``paper_dataset`` (where the paper's numbers come from: dataset and split),
  ``claim``, ``metric``, ``baseline``, optional ``headline``, optional ``blocked`` (why the table
  cannot be run as specified yet: ``list`` and the report show it, and no results are committed for
  it until the reason is gone), ``[report]`` (with at least one
  ``[[report.checks]]``), optional ``[paper_model]``, ``[defaults]``, one ``[scales.<name>]``
  block per scale (``mini`` required) and ``[[variants]]``. A run config is
  ``defaults`` <- ``scales.<scale>`` <- the variant, merged section by section (``model``,
  ``data``, ``pretrain``, ``train``, ``eval``).
* ``kind = "timing"``: ``id``, ``title``, ``source``, ``paper_table``, ``paper_hardware``,
  ``num_classes``, ``claim``, ``reference`` (an item), ``compare`` (``"ratio"`` or ``"speedup"``),
  ``agree_factor``, ``[defaults]`` (``model``, ``input_size``, ...) and ``[[items]]`` (``name``,
  ``model``, optional ``stage``, ``input_size``, ``group``, ``memory``, ``paper`` = ``ms``,
  ``ratio``, ``mem_gb``). Benchmarks measure the items; the report compares ratios.

``extends = ["_base/x.toml", ...]`` (paths relative to the spec's directory) merges protocol
bases in order, then the file itself: tables merge key by key, anything else is replaced.
Every error names the file a key came from, the key path and what was expected.

This module checks structure, types and references. What a model, dataset or loss accepts is
checked by the driver (:mod:`ablations.validate`), which builds them through ``seg_core``.

**Result records** (one JSON per run; :data:`RECORD_VERSION`): see :func:`check_record`.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
import re
import tomllib
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablations.codehash import Project, node_hash, strip_docstrings

SPEC_VERSION = 2
RECORD_VERSION = 2
SECTIONS = ("model", "data", "pretrain", "train", "eval")
SLUG_MAX = 64  # a variant's file slug; file names add the seed and the hash, far below the 255-byte limit
FILE_NAME_MAX = 255  # bytes, the limit of common file systems
EXTENDS_DEPTH_MAX = 16  # bases of bases: a protocol base and a table's delta need two or three
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_METRIC = re.compile(r"^[a-z][a-z0-9_@.]*$")
EXPECTATIONS = ("greater", "less", "similar")
CHECK_KINDS = ("pairwise", "ordering")
TIMING_COMPARE = ("ratio", "speedup")


class SpecError(ValueError):
    """A malformed spec: names the file, the key path and what was expected."""

    def __init__(self, file: str | Path, path: str, message: str) -> None:
        self.file, self.path, self.message = str(file), path, message
        super().__init__(f"{file}: {path}: {message}")


def normalise_name(name: str) -> str:
    """The one normalisation of variant names (spec, command line and records alike)."""
    return " ".join(name.split())


def slugify(name: str) -> str:
    """Variant name -> file-name-safe slug (``"k=15"`` -> ``"k-15"``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ---------------------------------------------------------------------------------- types
def type_name(t: Any) -> str:
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "a boolean",
        dict: "a table",
        list: "an array",
    }.get(t, getattr(t, "__name__", str(t)))


def check_type(value: Any, expected: Any) -> str | None:
    """None when ``value`` fits ``expected`` (a type or a typing hint), else what was expected."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(expected) if a is not type(None)]
        if value is None or any(check_type(value, a) is None for a in options):
            return None
        return " or ".join(type_name(typing.get_origin(a) or a) for a in options)
    if origin in (list, tuple, Sequence):
        if not isinstance(value, list):
            return "an array"
        (item,) = typing.get_args(expected)[:1] or (Any,)
        for v in value:
            if item is not Any and check_type(v, item) is not None:
                plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
                return f"an array of {plural.get(item, type_name(item))}"
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
    return None if isinstance(value, expected) else type_name(expected)


# ------------------------------------------------------------------------- loading, extends
@dataclass
class Document:
    """A spec file merged with its bases: the data and, per dotted key path, the file it came from."""

    file: Path
    data: dict
    origins: dict[str, Path] = field(default_factory=dict)

    def where(self, path: str) -> Path:
        """The file that set ``path`` (or its closest set ancestor); ``a[2].b`` reads as ``a.2.b``."""
        path = path.replace("[", ".").replace("]", "")
        while path:
            if path in self.origins:
                return self.origins[path]
            path = path.rsplit(".", 1)[0] if "." in path else ""
        return self.file

    def error(self, path: str, message: str) -> SpecError:
        return SpecError(self.where(path), path, message)


def _read_toml(file: Path) -> dict:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(file, "<file>", "no such spec file") from None
    except IsADirectoryError:
        raise SpecError(file, "<file>", "is a directory, not a spec file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(file, "<file>", f"cannot be read ({e})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(file, "<toml>", f"not valid TOML ({e})") from None


def _merge(into: dict, layer: dict, file: Path, origins: dict[str, Path], prefix: str = "") -> None:
    for key, value in layer.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            origins.setdefault(path, file)
            _merge(into[key], value, file, origins, f"{path}.")
        else:
            into[key] = copy.deepcopy(value)
            for stale in [p for p in origins if p == path or p.startswith(f"{path}.")]:
                del origins[stale]
            _record_origins(value, file, origins, path)


def _record_origins(value: Any, file: Path, origins: dict[str, Path], path: str) -> None:
    origins[path] = file
    if isinstance(value, dict):
        for key, child in value.items():
            _record_origins(child, file, origins, f"{path}.{key}")


def load_document(path: str | Path, _chain: tuple[Path, ...] = ()) -> Document:
    """Read a spec file and its ``extends`` bases (recursively, merged in order)."""
    file = Path(path)
    if file.resolve() in _chain:
        raise SpecError(file, "extends", f"circular: {' -> '.join(str(p) for p in _chain + (file.resolve(),))}")
    if len(_chain) >= EXTENDS_DEPTH_MAX:
        raise SpecError(
            _chain[0], "extends", f"a chain of more than {EXTENDS_DEPTH_MAX} bases (reached {file}): flatten it"
        )
    raw = _read_toml(file)
    extends = raw.pop("extends", [])
    if check_type(extends, list[str]) is not None:
        raise SpecError(
            file, "extends", f"expected an array of spec paths (relative to {file.parent}), got {extends!r}"
        )
    merged: dict = {}
    origins: dict[str, Path] = {}
    for i, base in enumerate(extends):
        base_file = file.parent / base
        if not base_file.is_file():
            raise SpecError(file, f"extends[{i}]", f"no such base spec {base_file}")
        doc = load_document(base_file, _chain + (file.resolve(),))
        _merge(merged, doc.data, base_file, origins)
        for key, origin in doc.origins.items():  # keep where nested base keys really came from
            if origins.get(key) == base_file:
                origins[key] = origin
    _merge(merged, raw, file, origins)
    return Document(file, merged, origins)


# ------------------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class Variant:
    name: str
    slug: str
    sections: dict
    paper: dict
    index: int
    paper_model: dict
    scales: dict = field(default_factory=dict)  # scale -> sections applied at that scale only


@dataclass(frozen=True)
class Spec:
    file: Path
    id: str
    kind: str
    title: str
    source: str
    paper_table: str
    paper_dataset: str
    claim: str
    metric: str
    baseline: str
    headline: str | None
    report: dict
    paper_model: dict
    defaults: dict
    scales: dict
    variants: tuple[Variant, ...]
    document: Document
    study: dict = field(default_factory=dict)  # [study]: scientific, nuisance (values searched), fixed
    blocked: str | None = None  # why this table has no committed results yet (shown by `list` and the report)

    def seeds(self, scale: str) -> list[int]:
        return list(self.scales[scale]["seeds"])

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == normalise_name(name))

    def resolve(self, scale: str, variant: Variant) -> tuple[dict, dict[str, str]]:
        """Merged sections for (scale, variant) and, per leaf key, the spec key path it came from."""
        merged: dict[str, dict] = {s: {} for s in SECTIONS}
        origin: dict[str, str] = {}
        layers = [
            ("defaults", self.defaults),
            (f"scales.{scale}", self.scales[scale]),
            (f"variants[{variant.index}]", variant.sections),
            (f"variants[{variant.index}].scales.{scale}", variant.scales.get(scale, {})),
        ]
        for prefix, layer in layers:
            for section in SECTIONS:
                for key, value in layer.get(section, {}).items():
                    merged[section][key] = copy.deepcopy(value)
                    origin[f"{section}.{key}"] = f"{prefix}.{section}.{key}"
        return merged, origin

    def where(self, path: str) -> Path:
        """The file a spec key path came from (a base, or the spec itself)."""
        return self.document.where(path)

    def error(self, path: str, message: str) -> SpecError:
        return SpecError(self.where(path), path, message)


@dataclass(frozen=True)
class TimingItem:
    name: str
    model: dict
    input_size: tuple[int, int]
    stage: str | None
    group: str | None
    memory: bool
    paper: dict
    index: int


@dataclass(frozen=True)
class TimingSpec:
    file: Path
    id: str
    kind: str
    title: str
    source: str
    paper_table: str
    paper_hardware: str
    num_classes: int
    claim: str
    reference: str
    compare: str
    agree_factor: float
    report: dict
    items: tuple[TimingItem, ...]
    document: Document


_COMMON_TOP = {
    "id": (str, True),
    "kind": (str, False),
    "title": (str, True),
    "source": (str, True),
    "paper_table": (str, True),
    "claim": (str, True),
    "report": (dict, False),
}
_TOP = {
    **_COMMON_TOP,
    "paper_dataset": (str, True),
    "metric": (str, True),
    "baseline": (str, True),
    "headline": (str, False),
    "paper_model": (dict, False),
    "defaults": (dict, True),
    "scales": (dict, True),
    "variants": (list, True),
    "study": (dict, False),
    "blocked": (str, False),
}
_STUDY = {
    "scientific": (list[str], False),
    "nuisance": (dict, True),
    "fixed": (list[str], False),
    "search": (dict, False),
    "untuned": (str, False),
}
_TIMING_TOP = {
    **_COMMON_TOP,
    "paper_hardware": (str, True),
    "num_classes": (int, True),
    "reference": (str, True),
    "compare": (str, True),
    "agree_factor": (float, True),
    "defaults": (dict, False),
    "items": (list, True),
}
_REPORT = {
    "x": (str, False),
    "x_label": (str, False),
    "x_default": (float, False),
    "notes": (str, False),
    "discussion": (str, False),
    "finding": (str, False),  # the table's finding for the index, at most FINDING_WORDS words
    "checks": (list, False),
    "columns": (list[str], False),
    "complexity": (list[str], False),
    "paper_complexity": (list[str], False),
    "model_info": (list[str], False),
    "series": (str, False),
    "series_labels": (dict, False),
    "beyond": (str, False),  # the spec (paper table) whose explanation this one tests beyond the paper
    "plot": (str, False),  # "columns": the figure runs along report.columns, one line per variant
}
FINDING_WORDS = 15
_TIMING_REPORT = {"notes": (str, False), "discussion": (str, False)}
_CHECK = {
    "claim": (str, True),
    "kind": (str, False),
    "a": (str, False),
    "b": (str, False),
    "metric": (str, False),
    "expect": (str, False),
    "margin": (float, False),
    "min_rho": (float, False),
    "b_metric": (str, False),
    "base_metric": (str, False),
    "ours": (bool, False),  # our question beyond the paper: judged and shown, not counted in the paper's verdict
    "not_testable": (dict, False),  # {kind = "stated", reason = ...}: why the mini protocol cannot express it
}
_NOT_TESTABLE = {"kind": (str, True), "reason": (str, True)}
STATED_REASON_WORDS = 8  # a stated reason says what is missing and the measured figure, not "too small"
_PAPER_MODEL = {"num_classes": (int, True), "input_size": (list[int], True), "model": (dict, False)}
_VARIANT_PAPER_MODEL = {"model": (dict, False)}
_SCALE_META = {"seeds": (list[int], True), "description": (str, False)}
_SECTION_TABLES = {s: (dict, False) for s in SECTIONS}
_ITEM = {
    "name": (str, True),
    "model": (dict, False),
    "input_size": (list[int], False),
    "stage": (str, False),
    "group": (str, False),
    "memory": (bool, False),
    "paper": (dict, False),
}
_TIMING_DEFAULTS = {"model": (dict, False), "input_size": (list[int], False)}
_COMPLEXITY = re.compile(r"^[a-z_][a-z0-9_]*\.(params|weights|macs)$")
MAX_SEED = 2**32 - 1  # torch seeds are 64-bit, numpy's and our data streams' 32-bit: keep to the smaller


def check_table(
    doc: Document, path: str, table: Any, options: dict[str, tuple[Any, bool]], *, partial: bool = False
) -> None:
    if not isinstance(table, dict):
        raise doc.error(path, f"expected a table, got {table!r}")
    for key, value in table.items():
        key_path = f"{path}.{key}" if path else key
        if key not in options:
            raise doc.error(key_path, f"unknown key; expected one of {sorted(options)}")
        expected = check_type(value, options[key][0])
        if expected is not None:
            raise doc.error(key_path, f"expected {expected}, got {value!r}")
    if not partial:
        for key, (_, required) in options.items():
            if required and key not in table:
                raise doc.error(f"{path}.{key}" if path else key, "missing required key")


def load_spec(path: str | Path) -> Spec | TimingSpec:
    """Parse and structurally validate one spec file (and its bases); raises :class:`SpecError`."""
    doc = load_document(path)
    raw = doc.data
    kind = raw.get("kind", "ablation")
    if kind == "timing":
        return _load_timing(doc)
    if kind != "ablation":
        raise doc.error("kind", f"expected 'ablation' or 'timing', got {kind!r}")
    check_table(doc, "", raw, _TOP)
    _check_id(doc)
    _check_metric(doc, "metric", raw["metric"])
    check_table(doc, "report", raw.get("report", {}), _REPORT, partial=True)
    finding = raw.get("report", {}).get("finding")
    if finding is not None and not 0 < len(finding.split()) <= FINDING_WORDS:
        raise doc.error(
            "report.finding",
            f"expected the table's finding in 1-{FINDING_WORDS} words (the index shows it on one line), "
            f"got {len(finding.split())}: {finding!r}",
        )
    check_table(doc, "defaults", raw["defaults"], _SECTION_TABLES, partial=True)
    _check_sections_shallow(doc, "defaults", raw["defaults"])

    scales = raw["scales"]
    if not scales:
        raise doc.error("scales", "expected at least one scale block, e.g. [scales.mini]")
    if "mini" not in scales:
        raise doc.error("scales.mini", "missing: every spec needs the mini scale")
    for name, block in scales.items():
        path = f"scales.{name}"
        if not _SLUG.match(name):
            raise doc.error(path, "scale names must be lower-case slugs")
        check_table(doc, path, block, {**_SCALE_META, **_SECTION_TABLES})
        seeds = block["seeds"]
        if not seeds or any(not 0 <= s <= MAX_SEED for s in seeds) or len(set(seeds)) != len(seeds):
            raise doc.error(
                f"{path}.seeds", f"expected a non-empty array of distinct integers in [0, {MAX_SEED}], got {seeds!r}"
            )
        _check_sections_shallow(doc, path, block)

    variants_raw = raw["variants"]
    if not variants_raw:
        raise doc.error("variants", "expected at least one [[variants]] entry")
    variants, names, slugs = [], set(), {}
    for i, v in enumerate(variants_raw):
        path = f"variants[{i}]"
        check_table(
            doc,
            path,
            v,
            {
                "name": (str, True),
                "paper": (dict, False),
                "paper_model": (dict, False),
                "scales": (dict, False),
                **_SECTION_TABLES,
            },
        )
        for scale_name, scale_sections in v.get("scales", {}).items():  # a variant's delta at one scale
            if scale_name not in scales:
                raise doc.error(
                    f"{path}.scales.{scale_name}",
                    f"no scale {scale_name!r} in this spec; expected one of {sorted(scales)}",
                )
            check_table(doc, f"{path}.scales.{scale_name}", scale_sections, _SECTION_TABLES)
            _check_sections_shallow(doc, f"{path}.scales.{scale_name}", scale_sections)
        if "paper_model" in v:
            if "paper_model" not in raw:
                raise doc.error(f"{path}.paper_model", "needs a top-level [paper_model] (num_classes, input_size)")
            check_table(doc, f"{path}.paper_model", v["paper_model"], _VARIANT_PAPER_MODEL)
        name = _check_variant_name(doc, path, v["name"], names, slugs)
        for key, value in v.get("paper", {}).items():
            if check_type(value, float) is not None:
                raise doc.error(f"{path}.paper.{key}", f"expected a number (the paper's value), got {value!r}")
        sections = {s: v[s] for s in SECTIONS if s in v}
        _check_sections_shallow(doc, path, sections)
        variants.append(
            Variant(
                name,
                slugify(name),
                sections,
                dict(v.get("paper", {})),
                i,
                dict(v.get("paper_model", {})),
                {k: dict(t) for k, t in v.get("scales", {}).items()},
            )
        )

    for key in ("baseline", "headline"):
        if key in raw and normalise_name(raw[key]) not in names:
            raise doc.error(key, f"expected the name of a variant ({sorted(names)}), got {raw[key]!r}")
    _check_report(doc, raw.get("report", {}), names)
    if "paper_model" in raw:
        check_table(doc, "paper_model", raw["paper_model"], _PAPER_MODEL)
        if len(raw["paper_model"]["input_size"]) != 2 or min(raw["paper_model"]["input_size"]) < 1:
            raise doc.error(
                "paper_model.input_size", f"expected [height, width], got {raw['paper_model']['input_size']!r}"
            )
    study = _check_study(doc, raw.get("study"), scales)
    if raw.get("report", {}).get("paper_complexity") and "paper_model" not in raw:
        raise doc.error(
            "report.paper_complexity", "needs a top-level [paper_model] to count at the paper's configuration"
        )
    return Spec(
        doc.file,
        raw["id"],
        kind,
        raw["title"],
        raw["source"],
        raw["paper_table"],
        raw["paper_dataset"],
        raw["claim"],
        raw["metric"],
        normalise_name(raw["baseline"]),
        normalise_name(raw["headline"]) if "headline" in raw else None,
        raw.get("report", {}),
        raw.get("paper_model", {}),
        raw["defaults"],
        scales,
        tuple(variants),
        doc,
        study,
        raw.get("blocked", "").strip() or None,
    )


def _check_study(doc: Document, study: dict | None, scales: dict) -> dict:
    """``[study]``: ``nuisance`` (``"section.key" = [values]``, each tuned per variant and seed on
    the held-out split), ``scientific`` (what the table varies), ``fixed`` (held constant,
    printed as caveats) and ``search`` (``"section.key" = value``: what the search runs change,
    e.g. fewer steps; the chosen setting is then run with the spec's own), all dotted keys."""
    if study is None:
        return {}
    check_table(doc, "study", study, _STUDY)
    if not study["nuisance"]:
        raise doc.error("study.nuisance", "expected at least one key with the values to search")
    for kind in ("nuisance", "scientific", "fixed", "search"):
        for key in study.get(kind, []):
            if key.split(".")[0] not in SECTIONS or "." not in key:
                raise doc.error(
                    f"study.{kind}", f"{key!r}: expected a config key section.key, section one of {list(SECTIONS)}"
                )
    # the longest file name a run can get: a variant slug, each key's value, --search, seed, hash
    longest = SLUG_MAX + len(f"--search--seed{MAX_SEED}--12345678.json")
    for key, values in study["nuisance"].items():
        if not isinstance(values, list) or not values or len({json.dumps(v) for v in values}) != len(values):
            raise doc.error(f"study.nuisance.{key}", f"expected a list of distinct values to search, got {values!r}")
        slugs: dict[str, Any] = {}
        for value in values:  # a value names its runs' files: two that name the same file would erase each other
            slug = slugify(f"{key.split('.')[-1]}-{json.dumps(value)}")
            if slug in slugs:
                raise doc.error(
                    f"study.nuisance.{key}",
                    f"values {slugs[slug]!r} and {value!r} give the same file name ({slug!r}): make them differ in "
                    "letters or digits",
                )
            if len(slug.encode()) > SLUG_MAX:
                raise doc.error(
                    f"study.nuisance.{key}",
                    f"value {value!r} makes a file-name part of {len(slug.encode())} bytes (at most {SLUG_MAX})",
                )
            slugs[slug] = value
        longest += 2 + max(len(slug.encode()) for slug in slugs)
    if longest > FILE_NAME_MAX:
        raise doc.error(
            "study.nuisance",
            f"its longest run file name would be {longest} bytes (at most {FILE_NAME_MAX}): fewer keys or shorter values",
        )
    both = sorted(
        set(study["nuisance"])
        & set(study.get("scientific", []) + study.get("fixed", []) + list(study.get("search", {})))
    )
    if both:
        raise doc.error("study", f"{both} cannot be nuisance and scientific, fixed or a search setting at once")
    return {
        "nuisance": dict(study["nuisance"]),
        "scientific": list(study.get("scientific", [])),
        "fixed": list(study.get("fixed", [])),
        "search": dict(study.get("search", {})),
        **({"untuned": study["untuned"]} if "untuned" in study else {}),
    }


def study_trials(spec: Spec) -> list[dict]:
    """The nuisance settings every (variant, seed) is run with: their product, in the spec's
    order; ``[{}]`` without a ``[study]``."""
    nuisance = spec.study.get("nuisance", {})
    keys = list(nuisance)
    return [dict(zip(keys, combo)) for combo in itertools.product(*nuisance.values())] if keys else [{}]


class NoHoldout(ValueError):
    """A ``[study]``'s runs without held-out metrics: nothing to choose on but val, which is refused."""


def choose(metric: str, records: list[dict], excluded: Collection[int] = ()) -> tuple[int | None, list[float]]:
    """A ``[study]``'s choice among the runs of one variant and seed (one per nuisance setting):
    (index of the run best on the held-out split by ``metric``, the first on a tie; None when every
    run failed, failed runs never win) and the held-out scores in %. Never val.

    ``excluded``: settings that cannot be used although their (search) run is fine, because the
    run with the spec's own schedule failed at them; the next best setting is chosen instead."""
    scores = []
    for record in records:
        if record["status"] != "ok":
            scores.append(math.nan)
            continue
        if not record.get("holdout_metrics"):
            raise NoHoldout("a [study] chooses on held-out data: its runs need data.holdout_images")
        scores.append(100 * record["holdout_metrics"].get(metric, math.nan))
    ok = [i for i, r in enumerate(records) if r["status"] == "ok" and i not in excluded]
    if not ok:
        return None, scores
    return max(ok, key=lambda i: (scores[i], -i)), scores


def run_slug(variant: Variant, trial: Mapping[str, Any] | None = None, search: bool = False) -> str:
    """A run's file slug: the variant's, then each nuisance value (``k-3--lr-0-003``), then
    ``--search`` for a search run."""
    parts = [variant.slug] + [
        slugify(f"{key.split('.')[-1]}-{json.dumps(value)}") for key, value in (trial or {}).items()
    ]
    return "--".join(parts + (["search"] if search else []))


def _check_id(doc: Document) -> None:
    spec_id = doc.data["id"]
    if not _SLUG.match(spec_id) or len(spec_id) > SLUG_MAX:
        raise doc.error(
            "id", f"expected a lower-case slug like 'my-table' (at most {SLUG_MAX} characters), got {spec_id!r}"
        )
    if doc.file.stem != spec_id:
        raise doc.error(
            "id",
            f"expected the file's name ({doc.file.stem!r}): the id names its results and its page, got {spec_id!r}",
        )


def _check_variant_name(doc: Document, path: str, raw_name: str, names: set[str], slugs: dict[str, str]) -> str:
    name = normalise_name(raw_name)
    if not name:
        raise doc.error(f"{path}.name", "expected a non-empty name")
    if any(c in raw_name for c in "|\n\r\t`"):
        raise doc.error(
            f"{path}.name",
            f"expected a name without '|', '`', tabs or line breaks (they break the report's tables), got {raw_name!r}",
        )
    if name in names:
        raise doc.error(f"{path}.name", f"duplicate variant name {name!r}")
    slug = slugify(name)
    if not slug:
        raise doc.error(
            f"{path}.name",
            f"name {name!r} has no ASCII letter or digit to name its result files by; add some (e.g. 'k=15' -> 'k-15')",
        )
    if len(slug) > SLUG_MAX:
        raise doc.error(
            f"{path}.name",
            f"name gives a file slug of {len(slug)} characters; at most {SLUG_MAX}, got {name[:40]!r}...",
        )
    if slug in slugs:
        raise doc.error(f"{path}.name", f"name {name!r} gives the file slug {slug!r}, already used by {slugs[slug]!r}")
    names.add(name)
    slugs[slug] = name
    return name


def _check_metric(doc: Document, path: str, metric: Any) -> None:
    if not isinstance(metric, str) or not _METRIC.match(metric):
        raise doc.error(path, f"expected a metric name like 'miou' or 'boundary_pixel_acc', got {metric!r}")


def _check_not_testable(doc: Document, path: str, mark: dict) -> None:
    """A claim marked not testable at this scale by hand: only for a reason code cannot measure
    (``kind = "stated"``, with the reason and its measured figure). The measurable kind (filter
    taps off the feature map) is never written: :mod:`ablations.regime` measures it for every
    pairwise claim, so a spec cannot choose it for a claim after seeing the result."""
    check_table(doc, path, mark, _NOT_TESTABLE)
    if mark["kind"] != "stated":
        measured = " (taps on the map are measured for every claim by ablations.regime; remove the mark)"
        raise doc.error(
            f"{path}.kind",
            f'expected "stated", got {mark["kind"]!r}'
            + (measured if mark["kind"] in ("valid_taps", "taps", "tap_share", "regime") else ""),
        )
    if len(mark["reason"].split()) < STATED_REASON_WORDS:
        raise doc.error(
            f"{path}.reason",
            f"got {mark['reason']!r}: a stated reason says what the mini protocol lacks and its measured figure "
            f"(at least {STATED_REASON_WORDS} words)",
        )


def _check_report(doc: Document, report: dict, names: set[str]) -> None:
    checks = report.get("checks", [])
    if not checks:
        raise doc.error(
            "report.checks", "expected at least one [[report.checks]] entry: the claims the table is judged on"
        )
    for i, check in enumerate(checks):
        path = f"report.checks[{i}]"
        check_table(doc, path, check, _CHECK)
        if "not_testable" in check:
            _check_not_testable(doc, f"{path}.not_testable", check["not_testable"])
        kind = check.get("kind", "pairwise")
        if kind not in CHECK_KINDS:
            raise doc.error(f"{path}.kind", f"expected one of {list(CHECK_KINDS)}, got {kind!r}")
        if "metric" in check:
            _check_metric(doc, f"{path}.metric", check["metric"])
        if kind == "ordering":
            for key in ("a", "b", "expect", "margin", "b_metric", "base_metric"):
                if key in check:
                    raise doc.error(
                        f"{path}.{key}",
                        "an ordering check compares every variant; it takes no a, b, expect, margin, b_metric or base_metric",
                    )
            if "min_rho" in check:
                raise doc.error(
                    f"{path}.min_rho",
                    f"got {check['min_rho']!r}: an ordering claim is judged against one rank-correlation bar for "
                    "every spec (report/how-to-read.md); remove the key",
                )
            continue
        for key in ("a", "b"):
            if key not in check:
                raise doc.error(f"{path}.{key}", "missing required key")
            if normalise_name(check[key]) not in names:
                raise doc.error(
                    f"{path}.{key}", f"expected the name of a variant ({sorted(names)}), got {check[key]!r}"
                )
        if "b_metric" in check:
            _check_metric(doc, f"{path}.b_metric", check["b_metric"])
        if "base_metric" in check:
            _check_metric(doc, f"{path}.base_metric", check["base_metric"])
            if "b_metric" in check:
                raise doc.error(f"{path}.base_metric", "cannot be combined with b_metric: give one or the other")
            if check["base_metric"] == check.get("metric"):
                raise doc.error(
                    f"{path}.base_metric", f"is the check's own metric {check['metric']!r}: the change would be zero"
                )
        if normalise_name(check["a"]) == normalise_name(check["b"]) and check.get(
            "b_metric", check.get("metric")
        ) == check.get("metric"):
            raise doc.error(
                f"{path}.b", f"compares {check['a']!r} with itself (give b_metric to compare two metrics of one run)"
            )
        if "min_rho" in check:
            raise doc.error(f"{path}.min_rho", "is not a key of a check (one bar for every ordering claim)")
        expect = check.get("expect", "greater")
        if expect not in EXPECTATIONS:
            raise doc.error(f"{path}.expect", f"expected one of {list(EXPECTATIONS)}, got {expect!r}")
        if expect == "similar" and "margin" not in check:
            raise doc.error(f"{path}.margin", "missing: an 'about equal' claim needs its equivalence margin in points")
        if expect == "similar" and check["margin"] <= 0:
            raise doc.error(f"{path}.margin", f"expected a positive number of points, got {check['margin']!r}")
        if expect != "similar" and "margin" in check:
            raise doc.error(f"{path}.margin", 'applies to expect = "similar" only')
    if all(check.get("ours", False) is True for check in checks):
        raise doc.error(
            f"report.checks[{len(checks) - 1}].ours",
            "every check is ours: a page is judged on the paper's claims, so at least one check must be the paper's",
        )
    if "plot" in report and report["plot"] != "columns":
        raise doc.error("report.plot", f'expected "columns" (the figure along report.columns), got {report["plot"]!r}')
    if report.get("plot") == "columns" and len(report.get("columns", [])) < 2:
        raise doc.error("report.plot", '"columns" needs at least two report.columns to draw along')
    for i, column in enumerate(report.get("columns", [])):
        _check_metric(doc, f"report.columns[{i}]", column)
    for key in ("complexity", "paper_complexity"):
        for i, column in enumerate(report.get(key, [])):
            if not _COMPLEXITY.match(column):
                raise doc.error(
                    f"report.{key}[{i}]",
                    f"expected '<part>.<params|weights|macs>' (e.g. 'head.weights'), got {column!r}",
                )


def _check_sections_shallow(doc: Document, prefix: str, block: dict) -> None:
    """Each section present must be a table (its keys are checked by the driver after merging)."""
    for section in SECTIONS:
        if section in block and not isinstance(block[section], dict):
            raise doc.error(f"{prefix}.{section}", f"expected a table, got {block[section]!r}")


def _load_timing(doc: Document) -> TimingSpec:
    raw = doc.data
    check_table(doc, "", raw, _TIMING_TOP)
    _check_id(doc)
    check_table(doc, "report", raw.get("report", {}), _TIMING_REPORT, partial=True)
    if raw["compare"] not in TIMING_COMPARE:
        raise doc.error("compare", f"expected one of {list(TIMING_COMPARE)}, got {raw['compare']!r}")
    if raw["agree_factor"] < 1:
        raise doc.error("agree_factor", f"expected a factor >= 1, got {raw['agree_factor']!r}")
    defaults = raw.get("defaults", {})
    check_table(doc, "defaults", defaults, _TIMING_DEFAULTS)
    if not raw["items"]:
        raise doc.error("items", "expected at least one [[items]] entry")
    items, names, slugs = [], set(), {}
    for i, item in enumerate(raw["items"]):
        path = f"items[{i}]"
        check_table(doc, path, item, _ITEM)
        name = _check_variant_name(doc, path, item["name"], names, slugs)
        model = {**defaults.get("model", {}), **item.get("model", {})}
        if "name" not in model:
            raise doc.error(f"{path}.model.name", "missing: the model to time (here or in [defaults.model])")
        size = item.get("input_size", defaults.get("input_size"))
        if size is None or len(size) != 2 or min(size) < 1:
            raise doc.error(f"{path}.input_size", f"expected [height, width] (here or in [defaults]), got {size!r}")
        for key, value in item.get("paper", {}).items():
            if key not in ("ms", "ratio", "mem_gb"):
                raise doc.error(f"{path}.paper.{key}", "unknown key; expected one of ['mem_gb', 'ms', 'ratio']")
            if check_type(value, float) is not None or value <= 0:
                raise doc.error(f"{path}.paper.{key}", f"expected a positive number, got {value!r}")
        items.append(
            TimingItem(
                name,
                model,
                (size[0], size[1]),
                item.get("stage"),
                item.get("group"),
                bool(item.get("memory", False)),
                dict(item.get("paper", {})),
                i,
            )
        )
    if normalise_name(raw["reference"]) not in names:
        raise doc.error("reference", f"expected the name of an item ({sorted(names)}), got {raw['reference']!r}")
    return TimingSpec(
        doc.file,
        raw["id"],
        "timing",
        raw["title"],
        raw["source"],
        raw["paper_table"],
        raw["paper_hardware"],
        raw["num_classes"],
        raw["claim"],
        normalise_name(raw["reference"]),
        raw["compare"],
        float(raw["agree_factor"]),
        raw.get("report", {}),
        tuple(items),
        doc,
    )


# ------------------------------------------------------------------------- resolved runs
def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON of a resolved run config (it names the result file)."""
    import hashlib
    import json

    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# The rule of ablations.regime: half the taps. Below it the typical tap of a claim's differing
# filters reads padding, and the filter is closer to a smaller one than to itself. Set with the
# rule, before any claim was measured against it; one for every spec.
MIN_TAP_SHARE = 0.5


def compared_pairs(spec: Spec, check: dict) -> list[tuple[str, str]]:
    """The variant pairs a claim compares, as :mod:`ablations.regime` measures them: a pairwise
    claim's (a, b); an ordering claim's every pair of ranked variants (those with a paper value
    for its metric), in the table's order: a rank orders every pair."""
    if check.get("kind", "pairwise") == "pairwise":
        return [(normalise_name(check["a"]), normalise_name(check["b"]))]
    metric = check.get("metric", spec.metric)
    return list(itertools.combinations([v.name for v in spec.variants if metric in v.paper], 2))


def geometry_hash(spec: Spec, scale: str, variant_name: str) -> str:
    """What a variant's layer geometry at ``scale`` depends on (its model, data and evaluation
    model settings), hashed: a regime measurement (:mod:`ablations.regime`) is current while
    this is unchanged."""
    variant = next(v for v in spec.variants if v.name == normalise_name(variant_name))
    merged, _ = spec.resolve(scale, variant)
    part = {"model": merged["model"], "data": merged["data"], "eval_model": merged.get("eval", {}).get("model")}
    return config_hash(part)[:12]


def run_filename(variant_slug: str, seed: int, hash_: str) -> str:
    return f"{variant_slug}--seed{seed}--{hash_[:8]}.json"


def apply_override(merged: dict, key: str, value: Any) -> None:
    """Set ``section.key[.sub...]`` in resolved sections (the command line's overrides)."""
    section, *path = key.split(".")
    target = merged[section]
    for i, part in enumerate(path[:-1]):
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            prefix = ".".join([section, *path[: i + 1]])
            raise SpecError("<command line>", key, f"{prefix} is {node!r}, not a table: cannot set {key}")
        target = node
    target[path[-1]] = copy.deepcopy(value)


def run_config(
    spec: Spec,
    scale: str,
    variant: Variant,
    seed: int,
    overrides: Mapping[str, Any] | None = None,
    trial: Mapping[str, Any] | None = None,
    search: bool = False,
) -> dict:
    """The resolved config of one run (what its hash and result file name are made of): the
    spec's, with a ``[study]``'s nuisance values (``trial``), then the command line's overrides,
    then (a search run) the study's ``search`` settings."""
    merged, _ = spec.resolve(scale, variant)
    later = spec.study.get("search", {}) if search else {}
    for key, value in {**(trial or {}), **(overrides or {}), **later}.items():
        apply_override(merged, key, value)
    return {**{s: merged[s] for s in SECTIONS}, "seed": seed}


# ---------------------------------------------------------------------------- spec files
def spec_paths(directory: Path) -> list[Path]:
    """The spec files of a directory (not its ``_base/`` protocol bases, which are not tables)."""
    return sorted(p for p in directory.glob("*.toml"))


def load_specs(directory: Path) -> tuple[list[Spec | TimingSpec], list[SpecError]]:
    """Every spec of ``directory`` that loads, and the errors of those that do not. Two files
    with one ``id`` are refused (both): their results and pages would overwrite each other."""
    specs, errors = [], []
    for path in spec_paths(directory):
        try:
            specs.append(load_spec(path))
        except SpecError as e:
            errors.append(e)
    return specs, errors


def find_spec(spec_id: str, directory: Path) -> Path:
    path = directory / f"{spec_id}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in spec_paths(directory)) or "none"
        raise SpecError(path, "<file>", f"no ablation {spec_id!r}; known: {known}")
    return path


# ------------------------------------------------------------------------- result records
_RECORD = {
    "schema": int,
    "ablation": str,
    "scale": str,
    "scale_tag": str,
    "variant": str,
    "seed": int,
    "config_hash": str,
    "config": dict,
    "status": str,
    "provenance": dict,
}
_RECORD_OK = {"metrics": dict, "complexity": dict, "timing": dict, "training": dict}
STATUSES = ("ok", "failed")


class RecordError(ValueError):
    """A result file that is not a complete result: names the file and what is wrong."""

    def __init__(self, file: str | Path, message: str) -> None:
        self.file, self.message = str(file), message
        super().__init__(f"{file}: {message}")


def check_record(record: Any, file: str | Path) -> dict:
    """``record`` if it is a complete result of :data:`RECORD_VERSION`, else :class:`RecordError`.

    A record has ``schema``, ``ablation``, ``scale``, ``scale_tag``, ``variant``, ``seed``,
    ``config_hash``, ``config``, ``status`` (``"ok"`` or ``"failed"``) and ``provenance``; an
    ``ok`` record also ``metrics``, ``complexity``, ``timing`` and ``training``; a ``failed`` one
    ``failure`` (``reason``, and ``step``, ``loss``, ``lr`` where known).
    """
    if not isinstance(record, dict):
        raise RecordError(file, f"not a result record (a JSON object), got {type(record).__name__}")
    if record.get("schema") != RECORD_VERSION:
        raise RecordError(file, f"result format {record.get('schema')!r}, expected {RECORD_VERSION}")
    required = dict(_RECORD)
    status = record.get("status")
    if status not in STATUSES:
        raise RecordError(file, f"status {status!r}, expected one of {list(STATUSES)}")
    required.update(_RECORD_OK if status == "ok" else {"failure": dict})
    for key, kind in required.items():
        if key not in record:
            raise RecordError(file, f"missing {key!r}")
        if not isinstance(record[key], kind) or (kind is int and isinstance(record[key], bool)):
            raise RecordError(file, f"{key!r} is not {type_name(kind)}")
    if status == "ok" and not isinstance(record["metrics"].get("miou"), (int, float)):
        raise RecordError(file, "metrics without 'miou'")
    for section in ("metrics", "holdout_metrics"):
        if isinstance(record.get(section), dict):
            for key, value in record[section].items():
                _check_metric_value(file, f"{section}.{key}", key, value)
    return record


# Metric keys that are not fractions: seconds (``*_s``) and pixels (``*_px``), both >= 0.
_UNITS = ("_s", "_px")


def _check_metric_value(file: str | Path, where: str, key: str, value: Any) -> None:
    """A stored metric is a fraction in [0, 1] (the report shows it as a percentage), a
    non-negative amount for a key in :data:`_UNITS`, or a list / dict of such (per class, where
    ``null`` or NaN marks a class with no pixels); ``true`` is not 100% and 7.5 is not 750%."""
    if isinstance(value, (list, dict)):
        for i, item in value.items() if isinstance(value, dict) else enumerate(value):
            if item is not None:
                _check_metric_value(file, f"{where}[{i!r}]", key, item)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(file, f"{where} = {value!r}: expected a number")
    if math.isnan(value):
        return
    if key.endswith(_UNITS):
        if not 0 <= value < math.inf:
            raise RecordError(file, f"{where} = {value!r}: expected a finite amount >= 0")
    elif not 0 <= value <= 1:
        raise RecordError(file, f"{where} = {value!r}: expected a fraction in [0, 1]")


# -------------------------------------------------------------------------- code fingerprints
def source_hash(path: Path) -> str:
    """sha256 (16 hex) of a Python file's code: its AST without docstrings, so comments,
    docstrings and formatting do not count; the code does (fingerprints recorded per file)."""
    return _source_hash(Path(path).resolve(), Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _source_hash(path: Path, mtime_ns: int) -> str:
    import ast

    del mtime_ns  # part of the cache key only: an edited file is hashed again
    return node_hash(strip_docstrings(ast.parse(path.read_text(encoding="utf-8"))))


def stale_sources(fingerprint: Mapping[str, str], root: Path) -> list[str]:
    """The entries of a result's code fingerprint whose code changed since: definitions
    (``path::name``, :mod:`ablations.codehash`) whose code exists nowhere in the project now, and,
    in fingerprints recorded before definitions were (``{relative path: hash}``, a whole file
    each), files whose code changed or that no longer exist."""
    by_definition = {k: v for k, v in fingerprint.items() if "::" in k}
    changed = Project(root).changed(by_definition) if by_definition else []
    for rel, digest in sorted(fingerprint.items()):
        if "::" in rel:
            continue
        path = root / rel
        if not path.is_file() or source_hash(path) != digest:
            changed.append(rel)
    return sorted(changed)
