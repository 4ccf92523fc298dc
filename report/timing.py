"""Timing tables: a ``kind = "timing"`` spec + the benchmarks' measurements -> a page.

Absolute times depend on the hardware (the paper's, named in the spec; ours, named on the
page), so a timing table puts *ratios* side by side: each item's time over the reference
item's (or the reference's over the item's, for ``compare = "speedup"``), measured in one run,
next to the same ratio of the paper's figures (or the ratio the paper states). Each ratio has a
range over the benchmark's rounds (the slowest against the fastest round of the other item, both
ways). A *speedup* is a one-sided claim ("X is faster than Y by r"): it *agrees* when our whole
range reaches at least r / ``agree_factor`` (faster than claimed still agrees) and *differs*
when it lies wholly below. A *ratio* (a share, a cost) is two-sided: it agrees when the range
lies within ``agree_factor`` of the paper's either way and differs when it lies wholly outside.
A range that straddles a bound is *unstable*: the rounds disagree, and no verdict is drawn from
them. The MAC ratio says
what the ratio would be if time were proportional to multiply-accumulates. Items with a
``group`` (e.g. the stages of one network at one resolution) also get each item's share of its
group and a stacked-bar figure.

Measurements come from ``results/benchmarks/timing-<device>.json`` (pytest-benchmark JSON);
each benchmark names in ``extra_info["measures"]`` the (spec, item) pairs it measures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ablations.schema import TimingSpec
from report import plotting
from report.load import ReportInputError
from report.tables import fmt, markdown


def load_measurements(path: Path) -> tuple[dict[tuple[str, str], dict], dict]:
    """{(spec id, item): measurement} and the run's machine description."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        benchmarks = data["benchmarks"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ReportInputError(f"{path}: not a benchmark result ({e}); re-run nox -s benchmarks") from None
    out = {}
    for b in benchmarks:
        info = b.get("extra_info", {})
        for spec_id, item in info.get("measures", []):
            out[(spec_id, item)] = {
                "ms": 1000 * b["stats"]["median"],
                "ms_min": 1000 * b["stats"].get("min", b["stats"]["median"]),  # older files: the median only
                "ms_max": 1000 * b["stats"].get("max", b["stats"]["median"]),
                "rounds": b["stats"]["rounds"],
                "gmac": info.get("gmac"),
                "peak_mb": info.get("peak_memory_mb"),
                "device": info.get("device"),
                "threads": info.get("threads"),
                "calibration_gflops": info.get("calibration_gflops"),
                "calibration": info.get("calibration"),
            }
    machine = {
        "cpu": (data.get("machine_info", {}).get("cpu") or {}).get("brand_raw", ""),
        "datetime": data.get("datetime"),
        "commit": (data.get("commit_info") or {}).get("id"),
    }
    return out, machine


def _ratio(a, b, speedup: bool) -> float:
    if a is None or b is None or a <= 0 or b <= 0:
        return math.nan
    return b / a if speedup else a / b


def rows(spec: TimingSpec, measured: dict) -> pd.DataFrame:
    speedup = spec.compare == "speedup"
    ref = next(i for i in spec.items if i.name == spec.reference)
    ours_ref = measured.get((spec.id, ref.name), {})
    out = []
    for item in spec.items:
        m = measured.get((spec.id, item.name), {})
        paper = item.paper.get("ratio")
        if paper is None:
            paper = _ratio(item.paper.get("ms"), ref.paper.get("ms"), speedup)
        ours = _ratio(m.get("ms"), ours_ref.get("ms"), speedup)
        # the range over rounds: this item's slowest round against the reference's fastest, and back
        ends = (
            _ratio(m.get("ms_max"), ours_ref.get("ms_min"), speedup),
            _ratio(m.get("ms_min"), ours_ref.get("ms_max"), speedup),
        )
        low, high = (min(ends), max(ends)) if not any(map(math.isnan, ends)) else (ours, ours)
        mac = _ratio(m.get("gmac"), ours_ref.get("gmac"), speedup)
        if item.name == ref.name:
            agreement = "reference"
        elif math.isnan(paper) or math.isnan(ours):
            agreement = "-"
        else:
            agreement = _agreement(low, high, paper, spec.agree_factor, one_sided=speedup)
        out.append(
            {
                "item": item.name,
                "group": item.group,
                "paper_ms": item.paper.get("ms"),
                "ms": m.get("ms"),
                "paper_ratio": paper,
                "ratio": ours,
                "ratio_low": low,
                "ratio_high": high,
                "mac_ratio": mac,
                "gmac": m.get("gmac"),
                "paper_mem_gb": item.paper.get("mem_gb"),
                "peak_mb": m.get("peak_mb"),
                "memory": item.memory,
                "agreement": agreement,
                "measured": bool(m),
            }
        )
    return pd.DataFrame(out)


def _agreement(low: float, high: float, paper: float, factor: float, *, one_sided: bool) -> str:
    """agrees / differs / unstable for our range [low, high] against the paper's ratio (see the
    module docstring: speedups are one-sided, ratios two-sided)."""
    floor, ceiling = paper / factor, math.inf if one_sided else paper * factor
    if floor <= low and high <= ceiling:
        return "agrees"
    if high < floor or low > ceiling:
        return "differs"
    return "unstable"


def verdict(spec: TimingSpec, table: pd.DataFrame) -> tuple[str, str]:
    """(label, sentence) from the ratios that have a paper figure."""
    if not table["measured"].any():
        return "no results", "not measured yet (nox -s benchmarks)"
    compared = table[table.agreement.isin(["agrees", "differs", "unstable"])]
    if compared.empty and table[table.agreement != "reference"]["paper_ratio"].isna().all():
        return "measured", "measured; the paper gives no figure to judge our ratios against"
    if compared.empty:
        return "incomplete", "no item with a paper figure was measured"
    agree = int((compared.agreement == "agrees").sum())
    unstable = int((compared.agreement == "unstable").sum())
    if agree == len(compared):
        label = "reproduced"
    elif agree:
        label = "partially reproduced"
    elif unstable == len(compared):
        label = "unstable"
    else:
        label = "not reproduced"
    word = "speedups" if spec.compare == "speedup" else "ratios"
    bound = (
        f"at least 1/{spec.agree_factor:g} of the paper's"
        if spec.compare == "speedup"
        else (f"within x{spec.agree_factor:g}")
    )
    detail = "; ".join(
        f"{r['item']}: ours {r['ratio']:.2f}x ({r['ratio_low']:.2f}-{r['ratio_high']:.2f}) vs paper "
        f"{r['paper_ratio']:.2f}x"
        for _, r in compared.iterrows()
    )
    agree_words = f"{agree} of {len(compared)} {word} {'agrees' if agree == 1 else 'agree'}"
    agree_words += f", {unstable} unstable across rounds" if unstable else ""
    return label, f"{label}: {agree_words} ({bound}; {detail})"


def _calibration(spec: TimingSpec, measured: dict) -> str:
    """The machine's speed beside the absolute times (the range, if the spec's items were
    measured in sessions that calibrated differently)."""
    found = [measured[(spec.id, i.name)] for i in spec.items if (spec.id, i.name) in measured]
    rates = sorted({m["calibration_gflops"] for m in found if m.get("calibration_gflops")})
    if not rates:
        return "none recorded with these measurements (re-run `nox -s benchmarks` to record one)."
    what = next(m["calibration"] for m in found if m.get("calibration"))
    span = f"{rates[0]:g}" if len(rates) == 1 else f"{rates[0]:g}-{rates[-1]:g}"
    missing = sum(1 for m in found if not m.get("calibration_gflops"))
    return (
        f"{span} GFLOP/s ({what}), measured by the benchmark session itself"
        + (f"; {missing} item(s) measured without one" if missing else "")
        + "."
    )


def figure(spec: TimingSpec, table: pd.DataFrame, path: Path) -> bool:
    """Per group: stacked bars of the items' times and their shares when the items are stages of
    one model (``stage``: parts of a whole); bars side by side when they are alternatives."""
    import seaborn as sns

    grouped = table[table.group.notna() & table.measured]
    if grouped.empty:
        return False
    stages = {i.name for i in spec.items if i.stage is not None}
    if not set(grouped["item"]) <= stages:
        return _alternatives_figure(spec, grouped, path)
    plt = plotting.pyplot()
    groups = list(dict.fromkeys(grouped["group"]))
    parts = list(dict.fromkeys(grouped["item"].map(lambda n: n.split(" @ ")[0])))
    colors = dict(zip(parts, sns.color_palette("tab10", len(parts))))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, share in ((ax1, False), (ax2, True)):
        for j, group in enumerate(groups):
            sub = grouped[grouped.group == group]
            total, bottom = sub["ms"].sum(), 0.0
            for _, r in sub.iterrows():
                part = r["item"].split(" @ ")[0]
                v = r["ms"] / (total / 100 if share else 1000)
                ax.bar(j, v, bottom=bottom, color=colors[part], label=part if j == 0 else None, width=0.6)
                bottom += v
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups)
        ax.set_ylabel("share of the group (%)" if share else "time (s)")
    ax1.set_title("Time per item")
    ax2.set_title("Share of each item")
    ax2.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)
    reference = spec.reference.split(" @ ")[0]
    form = "{}: {:g}x faster than {} in the paper" if spec.compare == "speedup" else "{} = {:g} x {} in the paper"
    notes = [  # the paper's figures for these items, beside ours (median; range over rounds)
        form.format(r.item.split(" @ ")[0], r.paper_ratio, reference)
        + f"; ours {r.ratio:.1f} ({r.ratio_low:.1f}-{r.ratio_high:.1f})"
        for r in grouped.itertuples()
        if r.item != spec.reference and math.isfinite(r.paper_ratio) and math.isfinite(r.ratio)
    ]
    if notes:
        ax1.text(
            0.98, 0.97, "\n".join(notes), transform=ax1.transAxes, ha="right", va="top", fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"},
        )  # fmt: skip
    fig.suptitle(spec.title)
    fig.tight_layout()
    plotting.save(fig, path)
    return True


def _alternatives_figure(spec: TimingSpec, grouped: pd.DataFrame, path: Path) -> bool:
    """Alternatives (whole models doing the same job) side by side, per group: never stacked."""
    plt = plotting.pyplot()
    groups = list(dict.fromkeys(grouped["group"]))
    fig, ax = plt.subplots(figsize=(9.5, 1.0 + 0.5 * len(grouped) + 0.4 * len(groups)))
    labels, positions, y = [], [], 0.0
    for group in groups:
        for r in grouped[grouped.group == group].itertuples():
            ax.barh(y, r.ms / 1000, color="#4c72b0", height=0.6)
            ax.text(r.ms / 1000, y, f" {r.ms / 1000:.2f} s", va="center", fontsize=9)
            labels.append(f"{r.item} ({group})" if len(groups) > 1 else r.item)
            positions.append(y)
            y += 1
        y += 0.5  # a gap between groups
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()
    ax.set_xlabel("time per image (s), median of the rounds")
    ax.set_xlim(0, grouped["ms"].max() / 1000 * 1.25)
    fig.suptitle(spec.title, fontsize=11)
    fig.tight_layout()
    plotting.save(fig, path)
    return True


def page(
    spec: TimingSpec, table: pd.DataFrame, measured: dict, machine: dict, source: str, fig_rel: str | None
) -> tuple[str, str]:
    """Markdown of the page and the index sentence."""
    label, sentence = verdict(spec, table)
    first = next((measured[(spec.id, i.name)] for i in spec.items if (spec.id, i.name) in measured), {})
    speedup = spec.compare == "speedup"
    word = "speedup" if speedup else "ratio"
    lines = [
        f"# {spec.title}",
        "",
        f"**Source:** {spec.source} ({spec.paper_hardware})  ",
        f"**Claim:** {spec.claim}  ",
        f"**Measured on:** {first.get('device', '-')}, {first.get('threads', '-')} threads, {machine.get('cpu', '')}; "
        f"batch 1, inference mode; median of the benchmark's rounds. Raw data: `{source}`.  ",
        f"**Calibration:** {_calibration(spec, measured)}",
        "",
        f"## Verdict: {label}",
        "",
        sentence[0].upper() + sentence[1:] + ".",
        "",
        f"Absolute times are not comparable across hardware; ratios measured in one run are. Each {word} is taken "
        f"against `{spec.reference}`"
        + (" (its time over the item's)" if speedup else " (the item's time over its)")
        + (
            f"; a speedup is a one-sided claim: it *agrees* when its whole range over rounds reaches at least the "
            f"paper's over {spec.agree_factor:g} (faster than claimed agrees too)"
            if speedup
            else f"; it *agrees* when its whole range over rounds lies within x{spec.agree_factor:g} of the paper's"
        )
        + f", *differs* when the range lies wholly outside, and is *unstable* when it straddles the bound. The MAC "
        f"{word} is what it would be if time were proportional to multiply-accumulates. "
        "[How to read this report](how-to-read.md).",
        "",
    ]
    if spec.report.get("discussion"):
        lines += ["**Our reading.** " + " ".join(spec.report["discussion"].split()), ""]
    shown = []
    totals = table[table.group.notna()].groupby("group")["ms"].sum() if table.group.notna().any() else {}
    for _, r in table.iterrows():
        row = {
            "item": r["item"],
            "paper ms": fmt(r["paper_ms"], ".0f"),
            "ours ms": fmt(r["ms"], ".0f"),
            f"paper {word}": fmt(r["paper_ratio"], ".2f"),
            f"ours {word}": fmt(r["ratio"], ".2f"),
            "range over rounds": "-"
            if pd.isna(r["ratio_low"]) or r["agreement"] == "reference"
            else (f"{r['ratio_low']:.2f}-{r['ratio_high']:.2f}"),
            f"MAC {word}": fmt(r["mac_ratio"], ".2f"),
            "GMAC": fmt(r["gmac"], ".1f"),
            "agreement": r["agreement"],
        }
        if table.group.notna().any():
            row["share of group"] = (
                "-" if pd.isna(r["group"]) or not r["measured"] else f"{100 * r['ms'] / totals[r['group']]:.1f} %"
            )
        if table["memory"].any():
            row["paper memory (GB)"] = fmt(r["paper_mem_gb"], ".1f")
            row["ours peak memory (MB)"] = fmt(r["peak_mb"], ".0f")
        shown.append(row)
    lines += ["## Table", "", markdown(pd.DataFrame(shown)), ""]
    if table["memory"].any():
        lines += [
            "Memory: the paper reports the GPU memory of the whole process; ours is the peak memory the forward pass "
            "adds (CPU: resident set in a fresh process; CUDA: `max_memory_allocated`). Compare ratios between rows, "
            "not values.",
            "",
        ]
    if fig_rel:
        lines += [f"![{spec.title}]({fig_rel})", ""]
    if spec.report.get("notes"):
        lines += ["**Protocol notes.** " + " ".join(spec.report["notes"].split()), ""]
    return "\n".join(lines) + "\n", sentence
