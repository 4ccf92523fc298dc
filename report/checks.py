"""Claims as pairwise comparisons, tested against seed noise.

A spec's ``[[report.checks]]`` states what a paper table claims as comparisons between two
variants on one metric: ``a`` greater than ``b``, ``a`` less than ``b``, or the two similar.
Each check is judged on the per-seed paired differences ``a - b`` (same seed, same data, same
frozen backbone): a difference counts only when it exceeds ``NOISE_SIGMAS`` times the larger
of the two variants' seed standard deviations; "similar" holds when the difference is within
that band or within ``SIMILAR_POINTS``, whichever is wider.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

NOISE_SIGMAS = 2.0    # a difference must exceed this many seed standard deviations
SIMILAR_POINTS = 0.5  # "similar" also holds within this many points (the paper's own similar pairs differ by 0.1-0.2)


@dataclass
class CheckResult:
    claim: str
    a: str
    b: str
    metric: str
    expect: str
    paper_delta: float
    delta: float
    delta_std: float
    threshold: float
    n: int
    outcome: str  # "holds" | "within noise" | "reversed" | "differs" | "not enough seeds"

    @property
    def holds(self) -> bool:
        return self.outcome == "holds"


def metric_values(df: pd.DataFrame, variant: str, metric: str) -> pd.Series:
    """Per-seed values (percent) of ``metric`` for ``variant``, indexed by seed."""
    if df.empty:
        return pd.Series(dtype=float)
    runs = df[df.variant == variant]
    return pd.Series([100 * m.get(metric, math.nan) for m in runs["metrics"]], index=list(runs["seed"]), dtype=float)


def paper_value(spec: dict, variant: str, metric: str) -> float:
    for v in spec["variants"]:
        if v["name"] == variant:
            return float(v.get("paper", {}).get(metric, math.nan))
    return math.nan


def judge(check: dict, spec: dict, df: pd.DataFrame) -> CheckResult:
    metric = check.get("metric", spec["metric"])
    expect = check.get("expect", "greater")
    a, b = metric_values(df, check["a"], metric), metric_values(df, check["b"], metric)
    paired = (a - b).dropna()
    n = len(paired)
    paper_delta = paper_value(spec, check["a"], metric) - paper_value(spec, check["b"], metric)
    result = CheckResult(check["claim"], check["a"], check["b"], metric, expect, paper_delta,
                         paired.mean() if n else math.nan, paired.std(ddof=1) if n > 1 else math.nan,
                         math.nan, n, "not enough seeds")
    if n < 2 or len(a) < 2 or len(b) < 2:
        return result
    threshold = NOISE_SIGMAS * max(a.std(ddof=1), b.std(ddof=1))
    result.threshold = threshold
    d = result.delta
    if expect == "similar":
        result.threshold = max(threshold, SIMILAR_POINTS)
        result.outcome = "holds" if abs(d) <= result.threshold else "differs"
        return result
    sign = 1.0 if expect == "greater" else -1.0
    if sign * d > threshold:
        result.outcome = "holds"
    elif sign * d < -threshold:
        result.outcome = "reversed"
    else:
        result.outcome = "within noise"
    return result


def judge_all(spec: dict, df: pd.DataFrame) -> list[CheckResult]:
    return [judge(c, spec, df) for c in spec.get("report", {}).get("checks", [])]


def describe(r: CheckResult) -> str:
    """Short phrase for a verdict sentence."""
    if r.outcome == "not enough seeds":
        return f"{r.claim}: not enough seeds"
    return f"{r.claim}: {r.outcome} ({r.metric} {r.delta:+.2f} points vs paper {r.paper_delta:+.1f})"
