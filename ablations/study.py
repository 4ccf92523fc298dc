"""Choosing a ``[study]``'s nuisance settings: per variant and seed, the setting whose run is best
on the held-out training images by the spec's metric (the first on a tie; failed runs never win),
never on val. The report (:mod:`report.load`) and the two-phase sweep (search runs, then the
chosen setting with the spec's own schedule) both choose through :func:`ablations.schema.choose`.

A chosen setting whose final run (the spec's own, longer schedule) fails, although its search run
did not, is excluded and the next best setting on the held-out images runs instead: the rule the
report applies too (:func:`report.load`), so the page says where it happened."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ablations.schema import Spec, choose
from ablations.store import read_result

Key = tuple[str, int]  # (variant, seed)


def choices(spec: Spec, runs: list[dict], excluded: dict[Key, list[dict]] | None = None) -> dict[Key, dict]:
    """{(variant, seed): chosen setting} from the finished search runs of ``runs`` (a (variant,
    seed) with a search run still missing, or only failed ones, is left out). ``excluded``: per
    (variant, seed), the settings whose final run failed (:func:`failed_finals`)."""
    groups: dict[Key, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["variant"], run["config"]["seed"]), []).append(run)
    out = {}
    for key, group in groups.items():
        records = [read_result(Path(r["path"]), r["config_hash"]) for r in group]
        if any(r is None for r in records):
            continue
        skip = [i for i, r in enumerate(group) if r["trial"] in (excluded or {}).get(key, [])]
        best, _ = choose(spec.metric, records, skip)
        if best is not None:
            out[key] = group[best]["trial"]
    return out


def failed_finals(final_runs: list[dict]) -> dict[Key, list[dict]]:
    """{(variant, seed): [settings]} whose final run is recorded as failed."""
    out: dict[Key, list[dict]] = {}
    for run in final_runs:
        record = read_result(Path(run["path"]), run["config_hash"])
        if record is not None and record["status"] != "ok":
            out.setdefault((run["variant"], run["config"]["seed"]), []).append(run["trial"])
    return out


def settle(spec: Spec, runs: list[dict], expand_final: Callable[[dict], list[dict]]) -> tuple[dict, dict]:
    """(choices, excluded) from the records on disk: the choice per (variant, seed), with every
    setting whose final run (``expand_final(choices)``) is recorded as failed excluded, repeated
    until no chosen setting's final run has failed. A (variant, seed) whose every setting failed
    drops out of the choices."""
    excluded: dict[Key, list[dict]] = {}
    while True:
        chosen = choices(spec, runs, excluded)
        new = {
            key: [t for t in trials if t not in excluded.get(key, [])]
            for key, trials in failed_finals(expand_final(chosen)).items()
        }
        if not any(new.values()):
            return chosen, excluded
        for key, trials in new.items():
            excluded.setdefault(key, []).extend(trials)
