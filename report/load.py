"""Loading: specs through the one schema, and exactly the records of the current configs.

For a spec at a scale (or an override tag), the runs the page may use are those whose config,
resolved from the spec as it is now, hashes to the record's file name. Every other file in the
directory (an older learning rate, a hand-made copy) is listed as *stale* and never averaged
in. Failed runs (diverged) are shown as such; runs without a record as missing. A record whose
code fingerprint names code that no longer exists is flagged, definition by definition
(:mod:`ablations.codehash`; older records: file by file).

A result file that cannot be read as a result stops the report (nothing is written) with the
file and what to do about it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ablations.schema import (
    NoHoldout,
    RecordError,
    Spec,
    check_record,
    choose,
    compared_pairs,
    config_hash,
    geometry_hash,
    run_config,
    run_filename,
    run_slug,
    study_trials,
)
from ablations.trunks import stale_parts

SPLITS = {"val": "metrics", "holdout": "holdout_metrics"}


class ReportInputError(Exception):
    """A result file the report cannot use; names the file and the fix."""


@dataclass
class Table:
    """One spec at one scale (or override tag), as the page shows it."""

    spec: Spec
    scale: str  # the spec's scale block used to resolve configs
    tag: str  # the results directory name (scale, or scale+hash of overrides)
    runs: pd.DataFrame  # one row per successful run of the current configs
    failed: list[dict] = field(default_factory=list)  # {"variant", "seed", "reason"}
    missing: list[tuple[str, int]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # files of other configs, not used
    changed_code: dict[str, list[str]] = field(default_factory=dict)  # file -> sources changed since
    expected: int = 0  # runs the spec plans (variants x its seeds); extra seeds are used too
    paper_models: dict | None = None
    choices: list[dict] = field(default_factory=list)  # [study]: per (variant, seed) the trial chosen
    regime: dict[int, dict] | None = None  # mini scale: check index -> the rule's measurement (regime.json)

    @property
    def directory(self) -> str:
        return f"results/{self.spec.id}/{self.tag}/"


def read_record(path: Path) -> dict:
    try:
        return check_record(json.loads(path.read_text(encoding="utf-8")), path)
    except (OSError, UnicodeDecodeError) as e:
        raise ReportInputError(f"{path}: cannot be read ({e}); delete it and re-run the ablation") from None
    except json.JSONDecodeError as e:
        raise ReportInputError(f"{path}: not valid JSON ({e}); delete it and re-run the ablation") from None
    except RecordError as e:
        raise ReportInputError(f"{e}; delete it and re-run the ablation") from None


def load_table(spec: Spec, results_dir: Path, tag: str, split: str = "val", root: Path | None = None) -> Table:
    """The runs of ``spec`` in ``results/<id>/<tag>/`` that belong to its current configs."""
    directory = results_dir / spec.id / tag
    scale = tag.split("+", 1)[0]
    files = sorted(directory.glob("*.json")) if directory.is_dir() else []
    records = {p.name: read_record(p) for p in files}
    overrides = next((r.get("overrides") for r in records.values() if r.get("overrides")), {}) if "+" in tag else {}
    table = Table(spec, scale, tag, pd.DataFrame())
    used: set[str] = set()
    rows = []
    planned = set() if "+" in tag else set(spec.seeds(scale))  # override runs: whatever seeds were run
    seeds = sorted(planned | {r["seed"] for r in records.values()})
    for variant in spec.variants:
        for seed in seeds:
            table.expected += seed in planned
            found = _select(spec, scale, variant, seed, overrides, records, table)
            if found is None:
                if seed in planned:
                    table.missing.append((variant.name, seed))
                continue
            names, name, record = found
            used.update(names)
            if record["status"] == "failed":
                f = record["failure"]
                lr = f.get("lr")
                table.failed.append(
                    {
                        "variant": variant.name,
                        "seed": seed,
                        "reason": f"{f['reason']} at step {f.get('step')}"
                        + (f" (lr {lr:.3g})" if isinstance(lr, (int, float)) else ""),
                    }
                )
                continue
            if root is not None:
                changed = stale_parts(record, root)
                if changed:
                    table.changed_code[name] = changed
            metrics = record.get(SPLITS[split])
            if not metrics:
                raise ReportInputError(
                    f"{directory / name}: no {SPLITS[split]} (the run held out no data: data.holdout_images)"
                )
            rows.append(
                {
                    "variant": variant.name,
                    "seed": seed,
                    "metrics": metrics,
                    "record": record,
                    "value": 100 * metrics.get(spec.metric, math.nan),
                }
            )
    table.stale = [f"{directory / n}" for n in sorted(set(records) - used)]
    table.runs = pd.DataFrame(rows, columns=["variant", "seed", "metrics", "record", "value"])
    if not table.runs.empty:
        order = {v.name: i for i, v in enumerate(spec.variants)}
        table.runs = table.runs.sort_values(
            by=["variant", "seed"], key=lambda c: c.map(order) if c.name == "variant" else c
        )
        table.runs = table.runs.reset_index(drop=True)
    if tag == "mini":  # the spec's own mini configs: an override (mini+<hash>) may change their geometry
        table.regime = load_regime(spec, results_dir)
    paper = results_dir / spec.id / "paper_model.json"
    if paper.is_file():
        try:
            table.paper_models = json.loads(paper.read_text(encoding="utf-8"))["variants"]
        except (ValueError, KeyError, TypeError) as e:
            raise ReportInputError(
                f"{paper}: not the paper-configuration counts ({e}); delete it and re-run the ablation"
            ) from None
    return table


def load_regime(spec: Spec, results_dir: Path) -> dict[int, dict] | None:
    """``results/<id>/regime.json`` (:mod:`ablations.regime`) by check index, each entry with the
    rule's share (``rule_share``); None when the file is absent (the rule was not measured, and
    the page says so). A file that is unreadable, or measured for other claims than the spec's
    (a check added, removed or edited since), stops the report with the command that rewrites it."""
    path = results_dir / spec.id / "regime.json"
    if not path.is_file():
        return None
    fix = f"rewrite it with `python -m ablations regime {spec.id}`"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        share = float(data["rule"]["min_tap_share"])
        entries = {int(e["check"]): {**e, "rule_share": share} for e in data["claims"]}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ReportInputError(f"{path}: not a regime measurement ({e}); {fix}") from None
    checks = spec.report.get("checks", [])
    hashes = {v.name: geometry_hash(spec, "mini", v.name) for v in spec.variants}  # once per variant
    if sorted(entries) != list(range(len(checks))):
        raise ReportInputError(f"{path}: measures {len(entries)} claims, the spec has {len(checks)}; {fix}")
    for i, entry in entries.items():
        check = checks[i]
        pairs = [(p.get("a"), p.get("b")) for p in entry.get("pairs", [])]
        if entry.get("claim") != check.get("claim") or pairs != compared_pairs(spec, check):
            raise ReportInputError(f"{path}: claim {i + 1} was measured for another claim than the spec's; {fix}")
        if entry.get("geometry") != {n: hashes.get(n) for n in entry["geometry"]}:
            raise ReportInputError(
                f"{path}: claim {i + 1} was measured on other models or data than the spec's now; {fix}"
            )
    return entries


def _select(spec: Spec, scale: str, variant, seed: int, overrides: dict, records: dict, table: Table):
    """(the files of this variant and seed, the one used, its record), or None when a run is
    missing. With a ``[study]``: every nuisance setting's run (its search run, where the study
    has a search) must exist, the setting chosen is the best on the held-out split
    (:func:`ablations.schema.choose`), and the run used is that setting's (final) run."""

    def find(trial: dict, search: bool):
        config = run_config(spec, scale, variant, seed, overrides, trial, search)
        name = run_filename(run_slug(variant, trial, search), seed, config_hash(config))
        record = records.get(name)
        return (name, record) if record is not None and record["config_hash"] == config_hash(config) else None

    if not spec.study:
        found = find({}, False)
        return None if found is None else ([found[0]], *found)
    search = bool(spec.study.get("search"))
    trials = study_trials(spec)
    candidates = [find(t, search) for t in trials]
    if any(c is None for c in candidates):
        return None
    names = [c[0] for c in candidates]
    gave_way: list[int] = []  # settings whose final run failed: the next best is used (ablations.study)
    while True:
        try:
            best, scores = choose(spec.metric, [c[1] for c in candidates], gave_way)
        except NoHoldout as e:
            raise ReportInputError(f"{table.directory}: {e}") from None
        if best is None:  # every setting failed: shown as failed
            return names + [find(trials[i], False)[0] for i in gave_way], *(
                find(trials[gave_way[0]], False) if gave_way else candidates[0]
            )
        used = find(trials[best], False) if search else candidates[best]
        if used is None:
            return None
        if used[1]["status"] == "ok" or not search:
            break
        gave_way.append(best)
        names.append(used[0])
    table.choices.append(
        {
            "variant": variant.name,
            "seed": seed,
            "chosen": trials[best],
            "holdout": {json.dumps(t, sort_keys=True): v for t, v in zip(trials, scores) if v == v},
            "gave_way": [
                {"setting": trials[i], "failure": find(trials[i], False)[1].get("failure", {})} for i in gave_way
            ],
        }
    )
    return names + ([used[0]] if search else []), *used


def scales_with_results(spec: Spec, results_dir: Path) -> list[str]:
    """``mini`` always; another scale when its results directory holds a result file."""
    out = []
    for scale in spec.scales:
        directory = results_dir / spec.id / scale
        if scale == "mini" or (directory.is_dir() and any(directory.glob("*.json"))):
            out.append(scale)
    return out
