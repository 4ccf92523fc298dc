"""Machine-readable exports of the report: ``claims.csv`` (one row per judged claim) and
``tables.csv`` (one row per variant and metric of every table), written next to the pages from
the same judged results, so a notebook can read what the pages show without parsing markdown."""

from __future__ import annotations

import io
import math

import pandas as pd

from report.checks import CI_LEVEL, NOT_TESTABLE, CheckResult, check_id, seeds_phrase
from report.load import Table
from report.tables import values

CLAIM_COLUMNS = [
    "paper",
    "table",
    "follows_up",
    "scale",
    "claim_id",
    "claim",
    "kind",
    "ours_beyond_paper",
    "a",
    "b",
    "metric",
    "b_metric",
    "base_metric",
    "paper_effect",
    "our_effect",
    "our_effect_sd",
    "ci_low",
    "ci_high",
    "ci_level",
    "n_seeds",
    "outcome",
    "reason",
    "tap_share",
]
TABLE_COLUMNS = ["paper", "table", "scale", "variant", "metric", "paper_value", "our_mean", "our_sd", "n_seeds"]


def claim_rows(paper: str, table: Table, results: list[CheckResult]) -> list[dict]:
    """A table's claims, one row each: our effect (pairwise: the mean per-seed difference in
    points; ordering: Spearman's rho) and its interval, the outcome and, where the outcome is
    not final, why (missing runs, seeds that would likely decide it, tied variants)."""
    rows = []
    for number, r in enumerate(results, start=1):
        if r.outcome == "incomplete" or (r.kind == "ordering" and r.missing):
            reason = r.missing
        elif r.outcome == NOT_TESTABLE:
            reason = r.untestable
        elif r.outcome == "undecided" and r.kind == "pairwise":
            reason = seeds_phrase(r)
        else:
            reason = ""
        rows.append(
            {
                "paper": paper,
                "table": table.spec.id,
                "follows_up": table.spec.report.get("beyond") or "",
                "scale": table.tag,
                "claim_id": check_id(number),
                "claim": r.claim,
                "kind": r.kind if r.kind == "ordering" else f"pairwise: {r.expect}",
                "ours_beyond_paper": r.ours,
                "a": r.a,
                "b": r.b,
                "metric": r.metric,
                "b_metric": r.b_metric if r.b_metric not in (None, r.metric) else "",
                "base_metric": r.base_metric or "",
                "paper_effect": r.paper_delta,
                "our_effect": r.delta,
                "our_effect_sd": r.delta_sd,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "ci_level": CI_LEVEL,
                "n_seeds": r.n,
                "outcome": r.outcome,
                "reason": reason,
                "tap_share": r.tap_share,
            }
        )
    return rows


def table_rows(paper: str, table: Table) -> list[dict]:
    """Every variant of a table with results, for its metric and each extra column's metric:
    the paper's value and our mean and sd over seeds (percent)."""
    spec = table.spec
    rows = []
    for v in spec.variants:
        for metric in dict.fromkeys([spec.metric, *spec.report.get("columns", [])]):
            ours = values(table, v.name, metric).dropna()
            rows.append(
                {
                    "paper": paper,
                    "table": spec.id,
                    "scale": table.tag,
                    "variant": v.name,
                    "metric": metric,
                    "paper_value": v.paper.get(metric, math.nan),
                    "our_mean": ours.mean() if len(ours) else math.nan,
                    "our_sd": ours.std(ddof=1) if len(ours) > 1 else math.nan,
                    "n_seeds": len(ours),
                }
            )
    return rows


def to_csv(rows: list[dict], columns: list[str]) -> str:
    """Rows as CSV text: fixed column order, floats to 4 decimals (deterministic), empty for missing."""
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=columns).to_csv(buffer, index=False, float_format="%.4f", lineterminator="\n")
    return buffer.getvalue()
