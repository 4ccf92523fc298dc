"""Choosing a ``[study]``'s nuisance settings: per variant and seed, the setting whose run is best
on the held-out training images by the spec's metric (the first on a tie; failed runs never win),
never on val. The report (:mod:`report.load`) and the two-phase sweep (search runs, then the
chosen setting with the spec's own schedule) both choose through :func:`ablations.schema.choose`."""

from __future__ import annotations

from pathlib import Path

from ablations.schema import Spec, choose
from ablations.store import read_result


def choices(spec: Spec, runs: list[dict]) -> dict[tuple[str, int], dict]:
    """{(variant, seed): chosen setting} from the finished search runs of ``runs`` (a
    (variant, seed) with a search run still missing, or only failed ones, is left out)."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["variant"], run["config"]["seed"]), []).append(run)
    out = {}
    for key, group in groups.items():
        records = [read_result(Path(r["path"]), r["config_hash"]) for r in group]
        if any(r is None for r in records):
            continue
        best, _ = choose(spec.metric, records)
        if best is not None:
            out[key] = group[best]["trial"]
    return out
