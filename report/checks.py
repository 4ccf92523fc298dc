"""Claims, judged on per-seed paired differences with a confidence interval (REFERENCE 5b).

A spec's ``[[report.checks]]`` states what a paper table claims. Two kinds:

* **pairwise** (``a``, ``b``, ``metric``, ``expect``; ``b_metric`` to read another metric of
  ``b``, e.g. the same run before post-processing): the per-seed differences ``a - b`` (same
  seed: same data order, same frozen backbone) give a two-sided Student-t interval for their
  mean at :data:`CI_LEVEL`. ``expect = "greater"`` (or ``"less"``) *holds* when the interval
  excludes zero on the claimed side, is *reversed* when it excludes zero on the other side, and
  is *undecided* otherwise. ``expect = "similar"`` is an equivalence test against the spec's
  ``margin`` (points): it *holds* when the whole interval lies within ``[-margin, margin]``
  (two one-sided tests at 2.5% each), *differs* when the interval lies wholly outside it, and is
  *undecided* otherwise. "Not significantly different" is never read as "similar".
* **ordering** (``kind = "ordering"``, ``metric``): Spearman's rank correlation rho between the
  paper's values and our seed means over the variants that have both, with a percentile
  bootstrap interval over seeds (:data:`BOOTSTRAP_SAMPLES` resamples of the seeds, drawn jointly
  for every variant since a seed fixes data order and backbone across variants; a fixed
  generator, so the report is deterministic). One threshold for every spec,
  :data:`ORDERING_MIN_RHO`: the claim *holds* when the interval lies at or above it, is
  *reversed* when the interval lies below zero (our order runs against the paper's), *differs*
  when it lies below the threshold otherwise, and is *undecided* when the interval straddles the
  threshold or when our seed means tie (rho undefined: no information, never a verdict).

An undecided pairwise claim carries the number of seeds that would likely decide it: the
smallest n for which the interval's half-width would clear the decision point, assuming the
observed mean and standard deviation of the differences stay as they are.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from report.names import metric_name

CI_LEVEL = 0.95
# Ordering claims: one bar for every spec. 0.5 is the conventional "large" correlation: the
# paper's order broadly kept, while near-ties the paper's single runs cannot resolve may swap.
ORDERING_MIN_RHO = 0.5
BOOTSTRAP_SAMPLES = 4000
MAX_SEEDS = 100  # "seeds to decide" beyond this is reported as "more than 100"
HOLDS, REVERSED, UNDECIDED, DIFFERS, INCOMPLETE = "holds", "reversed", "undecided", "differs", "incomplete"
NOT_TESTABLE = "not testable"  # at this scale: by the rule of ablations.regime, or a reason the spec states


@dataclass(kw_only=True)
class CheckResult:
    """One judged claim; built by keywords, every figure NaN and the outcome *incomplete* until
    the judge fills them."""

    claim: str
    kind: str  # "pairwise" | "ordering"
    a: str = ""
    b: str = ""
    metric: str
    expect: str  # greater | less | similar | ordering
    margin: float | None = None
    paper_delta: float = math.nan
    delta: float = math.nan  # mean of the per-seed differences (pairwise) or rho (ordering)
    delta_sd: float = math.nan
    n: int = 0
    ci_low: float = math.nan
    ci_high: float = math.nan
    outcome: str = INCOMPLETE
    seeds_to_decide: int | None = None  # undecided pairwise claims: seeds likely needed (None: > MAX_SEEDS)
    missing: str = ""  # incomplete: what is missing
    min_rho: float | None = None  # ordering claims: the rank correlation needed
    b_metric: str | None = None  # pairwise claims reading another metric of b
    base_metric: str | None = None  # pairwise claims on the change of a - b from base_metric to metric
    ours: bool = False  # our question beyond the paper: not counted in the table's verdict
    untestable: str = ""  # not testable at this scale: why (the measured rule, or the spec's stated reason)
    tap_share: float | None = None  # the rule's measure: share of the mechanism layers' taps on the map

    @property
    def holds(self) -> bool:
        return self.outcome == HOLDS


def t_interval(values: pd.Series, level: float = CI_LEVEL) -> tuple[float, float, float, float]:
    """Mean, sample sd and the two-sided Student-t interval of the mean of ``values`` (n >= 2)."""
    n = len(values)
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def _seeds_to_decide(mean: float, sd: float, n: int, gap: float) -> int | None:
    """Smallest n' > n whose interval half-width t(n'-1) sd / sqrt(n') is below ``gap``."""
    if gap <= 0:
        return None
    if sd == 0:
        return n + 1
    for m in range(n + 1, MAX_SEEDS + 1):
        if float(stats.t.ppf(0.5 + CI_LEVEL / 2, m - 1)) * sd / math.sqrt(m) < gap:
            return m
    return None


def metric_values(runs: pd.DataFrame, variant: str, metric: str) -> pd.Series:
    """Per-seed values (percent) of ``metric`` for ``variant``, indexed by seed (``runs`` has
    one row per run with ``variant``, ``seed`` and the ``metrics`` dict)."""
    if runs.empty:
        return pd.Series(dtype=float)
    sub = runs[runs.variant == variant]
    return pd.Series([100 * m.get(metric, math.nan) for m in sub["metrics"]], index=list(sub["seed"]), dtype=float)


def paper_value(paper: Mapping[str, Mapping[str, float]], variant: str, metric: str) -> float:
    return float(paper.get(variant, {}).get(metric, math.nan))


def judge_pairwise(
    check: dict,
    metric: str,
    paper: Mapping[str, Mapping[str, float]],
    df: pd.DataFrame,
    failed: Collection[str] = (),
) -> CheckResult:
    metric = check.get("metric", metric)
    b_metric = check.get("b_metric", metric)  # b's metric: e.g. the same run before post-processing
    expect = check.get("expect", "greater")
    margin = check.get("margin")
    base_metric = check.get("base_metric")  # the claim is on how a - b changes from base_metric to metric
    a, b = metric_values(df, check["a"], metric), metric_values(df, check["b"], b_metric)
    paired = a - b
    paper_delta = paper_value(paper, check["a"], metric) - paper_value(paper, check["b"], b_metric)
    if base_metric is not None:
        paired = paired - (metric_values(df, check["a"], base_metric) - metric_values(df, check["b"], base_metric))
        paper_delta -= paper_value(paper, check["a"], base_metric) - paper_value(paper, check["b"], base_metric)
    paired = paired.dropna()
    n = len(paired)
    result = CheckResult(
        claim=check["claim"],
        kind="pairwise",
        a=check["a"],
        b=check["b"],
        metric=metric,
        expect=expect,
        margin=margin,
        paper_delta=paper_delta,
        delta=float(paired.mean()) if n else math.nan,
        n=n,
        b_metric=b_metric,
        base_metric=base_metric,
    )
    if n < 2:
        absent = [name for name, values in ((check["a"], a), (check["b"], b)) if len(values) == 0]
        words = [
            f"{' and '.join(names)} {word}"
            for names, word in (
                ([n for n in absent if n not in failed], "not run"),
                ([n for n in absent if n in failed], "failed"),
            )
            if names
        ]
        no_value = [name for name, values in ((check["a"], a), (check["b"], b)) if len(values) and values.isna().all()]
        if absent:
            result.missing = "; ".join(words)
        elif no_value:
            result.missing = f"no {metric} value for {' and '.join(no_value)}"
        else:
            result.missing = f"{n} paired seed{'s' if n != 1 else ''}, 2 needed"
        return result
    mean, sd, low, high = t_interval(paired)
    result.delta, result.delta_sd, result.ci_low, result.ci_high = mean, sd, low, high
    if expect == "similar":
        if high <= margin and low >= -margin:
            result.outcome = HOLDS
        elif low > margin or high < -margin:
            result.outcome = DIFFERS
        else:
            result.outcome = UNDECIDED
            result.seeds_to_decide = _seeds_to_decide(mean, sd, n, abs(margin - abs(mean)))
        return result
    sign = 1.0 if expect == "greater" else -1.0
    lo, hi = sorted((sign * low, sign * high))
    if lo > 0:
        result.outcome = HOLDS
    elif hi < 0:
        result.outcome = REVERSED
    else:
        result.outcome = UNDECIDED
        result.seeds_to_decide = _seeds_to_decide(mean, sd, n, abs(mean))
    return result


def judge_ordering(
    check: dict,
    metric: str,
    paper: Mapping[str, Mapping[str, float]],
    df: pd.DataFrame,
    failed: Collection[str] = (),
) -> CheckResult:
    metric = check.get("metric", metric)
    theirs, columns = [], {}
    for name, figures in paper.items():
        values = metric_values(df, name, metric).dropna()
        if metric in figures and len(values):
            theirs.append(float(figures[metric]))
            columns[name] = values
    n = len(theirs)
    result = CheckResult(
        claim=check["claim"], kind="ordering", metric=metric, expect="ordering", n=n, min_rho=ORDERING_MIN_RHO
    )
    with_paper = sum(1 for figures in paper.values() if metric in figures)
    if n < with_paper or n < 3:
        absent = [name for name, figures in paper.items() if metric in figures and name not in columns]
        lost = sum(name in failed for name in absent)
        result.missing = f"{with_paper - n} of {with_paper} variants " + (
            f"without results ({lost} failed, {len(absent) - lost} not run)" if lost else "not run"
        )
        return result
    by_seed = pd.DataFrame(columns)  # seeds x variants (NaN where a variant lacks a seed)
    result.delta = _spearman(np.asarray(theirs), by_seed.mean().to_numpy()[None, :])[0]
    result.ci_low, result.ci_high = rho_interval(np.asarray(theirs), by_seed.to_numpy())
    result.n = len(by_seed)
    if math.isnan(result.delta) or math.isnan(result.ci_low):
        result.outcome = UNDECIDED
        result.missing = "our seed means tie, so the rank correlation is undefined"
    elif result.ci_low >= ORDERING_MIN_RHO:
        result.outcome = HOLDS
    elif result.ci_high < 0:
        result.outcome = REVERSED
    elif result.ci_high < ORDERING_MIN_RHO:
        result.outcome = DIFFERS
    else:
        result.outcome = UNDECIDED
    return result


def _spearman(reference: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Spearman's rho between ``reference`` (V values) and each row of ``rows`` (B x V); NaN
    where a row is constant (every variant tied)."""
    ranks = stats.rankdata(rows, axis=1)
    ref = stats.rankdata(reference)
    ref = ref - ref.mean()
    centred = ranks - ranks.mean(axis=1, keepdims=True)
    denom = np.sqrt((centred**2).sum(axis=1) * (ref**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, centred @ ref / np.where(denom > 0, denom, 1), np.nan)


def rho_interval(reference: np.ndarray, by_seed: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of Spearman's rho between ``reference`` (the paper's value
    per variant) and our per-variant means over seeds, ``by_seed`` (seeds x variants, NaN where
    a variant lacks a seed). Seeds are resampled jointly across variants. NaN when more than
    half the resamples tie every variant (no information)."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, by_seed.shape[0], size=(BOOTSTRAP_SAMPLES, by_seed.shape[0]))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample missing a variant's every seed
        means = np.nanmean(by_seed[picks], axis=1)  # B x V
    rhos = _spearman(reference, means)
    rhos = rhos[~np.isnan(rhos) & ~np.isnan(means).any(axis=1)]
    if len(rhos) < BOOTSTRAP_SAMPLES / 2:
        return math.nan, math.nan
    low, high = np.quantile(rhos, [0.5 - level / 2, 0.5 + level / 2])
    return float(low), float(high)


def judge(
    check: dict,
    metric: str,
    paper: Mapping[str, Mapping[str, float]],
    df: pd.DataFrame,
    failed: Collection[str] = (),
) -> CheckResult:
    """One claim. ``metric`` is the table's (a check may name another); ``paper`` maps each
    variant, in the table's order, to the paper's figures; ``df`` holds our runs; ``failed``
    names the variants whose runs failed (so that a missing value says "failed", not "not run")."""
    if check.get("kind", "pairwise") == "ordering":
        result = judge_ordering(check, metric, paper, df, failed)
    else:
        result = judge_pairwise(check, metric, paper, df, failed)
    result.ours = bool(check.get("ours", False))
    return result


def judge_all(
    checks: list[dict],
    metric: str,
    paper: Mapping[str, Mapping[str, float]],
    df: pd.DataFrame,
    failed: Collection[str] = (),
    regime: Mapping[int, dict] | None = None,
) -> list[CheckResult]:
    """Every claim; ``regime`` maps a check's index to its measurement at this scale
    (``results/<id>/regime.json``, :mod:`ablations.regime`), None where it was not measured."""
    results = [judge(c, metric, paper, df, failed) for c in checks]
    for i, (check, result) in enumerate(zip(checks, results)):
        mark_untestable(result, check, (regime or {}).get(i))
    return results


def mark_untestable(result: CheckResult, check: dict, measured: dict | None) -> None:
    """A claim the mini protocol cannot express is *not testable at this scale*, whatever its
    numbers (which stay shown): when the measured rule says so (``measured["testable"]`` is
    false: fewer than the rule's share of the mechanism layers' taps read the feature map, where
    the paper's configuration keeps that share), or when the spec states a reason code cannot
    check (``not_testable = {kind = "stated", reason = ...}``). Never for a claim without both
    variants' results: an incomplete claim stays incomplete."""
    if measured is not None:
        result.tap_share = measured["mini"]["min_share"]
    if result.outcome == INCOMPLETE:
        return
    if measured is not None and not measured["testable"]:
        paper = (measured.get("paper") or {}).get("min_share")
        pair = "" if measured.get("kind", "pairwise") == "pairwise" else " of {} vs {}".format(*measured["deciding"])
        result.untestable = (
            f"only {measured['mini']['min_share']:.0%} of the taps of the differing filters{pair} land on the "
            "feature map"
            + (f", {paper:.0%} in the paper's setting" if paper is not None else "")
            + f"; the rule needs {measured['rule_share']:.0%}"
        )
    elif "not_testable" in check:
        result.untestable = check["not_testable"]["reason"]
    if result.untestable:
        result.outcome = NOT_TESTABLE


def describe(r: CheckResult) -> str:
    """Short phrase for a verdict sentence."""
    if r.outcome == INCOMPLETE:
        return f"{r.claim}: incomplete ({r.missing})"
    if r.outcome == NOT_TESTABLE:
        return f"{r.claim}: not testable at this scale ({r.untestable})"
    if r.kind == "ordering":
        if math.isnan(r.ci_low):
            return f"{r.claim}: {r.outcome} ({r.missing})"
        return (
            f"{r.claim}: {r.outcome} (rank correlation with the paper {r.delta:.2f}, {100 * CI_LEVEL:g}% bootstrap "
            f"interval [{r.ci_low:.2f}, {r.ci_high:.2f}], needs >= {r.min_rho:g})"
        )
    paper = "" if math.isnan(r.paper_delta) else f", vs paper {r.paper_delta:+.1f}"  # qualitative claims have none
    measure = (
        metric_name(r.metric)
        if r.base_metric is None
        else f"{metric_name(r.metric)} gap minus {metric_name(r.base_metric)} gap"
    )
    text = (
        f"{r.claim}: {r.outcome} ({measure} {r.delta:+.2f} points, {100 * CI_LEVEL:g}% CI "
        f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]{paper})"
    )
    if r.outcome == UNDECIDED:
        text += f"; {seeds_phrase(r)}"
    return text


def seeds_phrase(r: CheckResult) -> str:
    if r.seeds_to_decide is None:
        return f"more than {MAX_SEEDS} seeds would be needed to decide"
    return f"about {r.seeds_to_decide} seeds would likely decide it"


@dataclass
class TableVerdict:
    label: str  # reproduced | partially reproduced | not reproduced | undecided | incomplete | no results | blocked
    sentence: str
    short: str = ""  # the label and the tally, without each claim's figures (a page shows them in its claims table)


def table_verdict(results: list[CheckResult]) -> TableVerdict:
    """One label for a table from the paper's claims' outcomes; our own questions (``ours``)
    follow the label in one sentence and never change it."""
    verdict = _paper_verdict([r for r in results if not r.ours])
    ours = [r for r in results if r.ours]
    if ours:
        verdict.sentence += ". Beyond the paper (not counted): " + "; ".join(describe(r) for r in ours)
        verdict.short += f"; {len(ours)} question{'s' if len(ours) > 1 else ''} of ours beyond the paper, not counted"
    return verdict


def _paper_verdict(results: list[CheckResult]) -> TableVerdict:
    """The label from the claims that can be tested at this scale; claims that cannot are counted
    beside it ("...; 2 not testable at this scale"), never as failures."""
    untestable = [r for r in results if r.outcome == NOT_TESTABLE]
    if results and len(untestable) == len(results):
        every = "the one claim is" if len(results) == 1 else f"all {len(results)} claims are"
        head = f"not testable at this scale: {every} outside what the mini protocol can express"
        return TableVerdict("not testable at this scale", f"{head}; {'; '.join(describe(r) for r in results)}", head)
    verdict = _testable_verdict([r for r in results if r.outcome != NOT_TESTABLE], "testable " if untestable else "")
    if untestable:
        aside = f"; {len(untestable)} not testable at this scale"
        verdict.short += aside
        verdict.sentence += aside + ": " + "; ".join(describe(r) for r in untestable)
    return verdict


def _testable_verdict(results: list[CheckResult], which: str = "") -> TableVerdict:
    counts = {o: sum(r.outcome == o for r in results) for o in (HOLDS, REVERSED, DIFFERS, UNDECIDED, INCOMPLETE)}
    total = len(results)
    if counts[INCOMPLETE]:
        missing = "; ".join(describe(r) for r in results if r.outcome == INCOMPLETE)
        return TableVerdict("incomplete", f"incomplete: {missing}", f"incomplete: {missing}")
    tally = ", ".join(f"{counts[o]} {o}" for o in (HOLDS, REVERSED, DIFFERS, UNDECIDED) if counts[o])
    others = "; ".join(describe(r) for r in results if not r.holds)
    if counts[HOLDS] == total:
        every = f"the one {which}claim holds" if total == 1 else f"all {total} {which}claims hold"
        return TableVerdict("reproduced", f"reproduced: {every}", f"reproduced: {every}")
    if counts[HOLDS]:
        head = f"partially reproduced: {counts[HOLDS]} of {total} {which}claims {'holds' if counts[HOLDS] == 1 else 'hold'}"
        return TableVerdict("partially reproduced", f"{head} ({tally}); not: {others}", f"{head} ({tally})")
    none = f"the one {which}claim does not hold" if total == 1 else f"none of the {total} {which}claims holds"
    if counts[REVERSED] + counts[DIFFERS]:
        head = f"not reproduced: {none} ({tally})"
        return TableVerdict("not reproduced", f"{head}; {others}", head)
    head = f"undecided: no claim can be decided with these seeds ({tally})"
    return TableVerdict("undecided", f"{head}; {others}", head)


# ------------------------------------------------------------------ readings cite their checks
def check_id(number: int) -> str:
    """The id a page gives its ``number``-th claim (1-based): what a reading cites, ``[C1]``."""
    return f"C{number}"


# A reading states an effect when it gives a signed number (+2.5, -0.8 points, +3.4 mIoU, ...).
_EFFECT = re.compile(r"(?<![\w.])[+\-\u2212]\d+(?:[.,]\d+)?")
# [C2], [C1, C3]: claims of this page; [<spec id> C4]: a claim of another table's page
_CITATION = re.compile(r"\[(?:([a-z0-9][a-z0-9-]*) )?(C\d+(?:, ?C\d+)*)\]")
_UNTESTED = re.compile(r"\b(not tested|untested|not judged)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.;:!?])\s+(?=[A-Z(\[*])")


def reading_sentences(text: str) -> list[str]:
    """A reading (a spec's ``report.discussion``) split into sentences, whitespace joined."""
    return [s for s in _SENTENCE_END.split(" ".join(text.split())) if s]


def uncited_effects(text: str, checks: int, others: Mapping[str, int] | None = None) -> list[str]:
    """The sentences of a reading that state an effect (a signed number) without citing a judged
    claim and without saying it was not tested (``not tested``, ``untested``, ``not judged``),
    and every sentence that cites a claim that does not exist. A claim is cited by its id on the
    page (``[C2]``, ``[C1, C3]``: ``checks`` claims) or on another table's page
    (``[<spec id> C4]``: ``others`` maps a spec id to its number of claims). The rule of issue 27:
    a page states an effect as a finding only where a judged check backs it."""
    others = others or {}
    bad = []
    for sentence in reading_sentences(text):
        cited = False
        for match in _CITATION.finditer(sentence):
            spec, ids = match.groups()
            limit = checks if spec is None else others.get(spec, 0)
            numbers = [int(i.strip()[1:]) for i in ids.split(",")]
            if not all(1 <= n <= limit for n in numbers):
                bad.append(sentence)
                break
            cited = True
        else:
            if _EFFECT.search(sentence) and not cited and not _UNTESTED.search(sentence):
                bad.append(sentence)
    return bad
