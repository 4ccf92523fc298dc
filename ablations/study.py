"""Choosing a ``[study]``'s nuisance settings: per variant and seed, the setting whose run is best
on the held-out training images by the spec's metric (the first on a tie; failed runs never win),
never on val. The report (:mod:`report.load`) and the two-phase sweep (search runs, then the
chosen setting with the spec's own schedule) both choose through :func:`choose`."""

from __future__ import annotations

import math
from pathlib import Path

from ablations.schema import Spec
from ablations.store import read_result


class NoHoldout(ValueError):
    pass


def choose(metric: str, records: list[dict]) -> tuple[int | None, list[float]]:
    """(index of the chosen record, held-out scores in %); None when every run failed."""
    scores = []
    for record in records:
        if record["status"] != "ok":
            scores.append(math.nan)
            continue
        if not record.get("holdout_metrics"):
            raise NoHoldout("a [study] chooses on held-out data: its runs need data.holdout_images")
        scores.append(100 * record["holdout_metrics"].get(metric, math.nan))
    ok = [i for i, r in enumerate(records) if r["status"] == "ok"]
    if not ok:
        return None, scores
    return max(ok, key=lambda i: (scores[i], -i)), scores


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
