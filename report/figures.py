"""A page's figure: paper vs ours along the spec's ``report.x`` (one line per ``report.series``
value when given), along the page's ``report.columns`` (``report.plot = "columns"``: one line
per variant, for a metric measured at several settings of one run, e.g. crop factors or
boundary tolerances), or per variant. Error bars are the sample sd over seeds (seaborn,
``errorbar="sd"``: deterministic); seeds are spread without random jitter, so the same results
give the same bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from report import plotting
from report.load import Table
from report.names import metric_name


def _get(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _seed_offsets(seeds: pd.Series, step: float) -> pd.Series:
    order = sorted(seeds.unique())
    return seeds.map({sd: step * (i - (len(order) - 1) / 2) for i, sd in enumerate(order)})


def _long(table: Table) -> pd.DataFrame:
    """One row per run: variant, seed, value (%), x, series."""
    report = table.spec.report
    runs = table.runs.copy()
    x_key, x_default = report.get("x"), report.get("x_default")
    values = [(_get(r["config"], x_key) if x_key else None) for r in runs["record"]]
    runs["x"] = [x_default if v is None else v for v in values]  # before pandas turns None into NaN
    series_key = report.get("series")
    labels = report.get("series_labels", {})
    runs["series"] = [
        labels.get(str(_get(r["config"], series_key)), str(_get(r["config"], series_key))) if series_key else ""
        for r in runs["record"]
    ]
    return runs


def figure(table: Table, summary: pd.DataFrame, path: Path) -> bool:
    if table.runs.empty:
        return False
    plt = plotting.pyplot()
    report = table.spec.report
    runs = _long(table)
    if report.get("plot") == "columns":
        fig = _columns(table, runs, plt)
    elif report.get("x") and report.get("series"):
        fig = _series(table, summary, runs, plt)
    elif report.get("x") and runs["x"].notna().all():
        fig = _sweep(table, summary, runs, plt)
    else:
        fig = _variants(table, summary, runs, plt)
    fig.suptitle(table.spec.title)  # the page's own title; it names its paper table
    fig.tight_layout()
    plotting.save(fig, path)
    return True


def _legend_below(ax, columns: int = 2) -> None:
    """The legend under the axes, where it cannot cover a point of the plot."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=columns, fontsize=9, frameon=False, title=None)


def _labels(table: Table) -> tuple[str, str]:
    n = int(table.runs.groupby("variant").size().min())
    return f"paper ({table.spec.paper_dataset})", f"ours, {table.tag} scale (mean ± sd over {n} seeds)"


def _sweep(table, summary, runs, plt):
    """Left: gain over the baseline along x, paper and ours; right: our value of every seed."""
    import seaborn as sns

    spec = table.spec
    paper_label, ours_label = _labels(table)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5.0))
    x_of = runs.drop_duplicates("variant").set_index("variant")["x"]
    s = summary[summary.n > 0].assign(x=lambda d: d["variant"].map(x_of)).sort_values("x")
    ax1.plot(s["x"], s["paper_delta"], "o--", color="0.35", label=paper_label)
    ax1.errorbar(s["x"], s["delta"], yerr=s["delta_sd"].fillna(0), fmt="o-", color="C0", capsize=3, label=ours_label)
    ax1.axhline(0, color="0.6", lw=0.8)
    ax1.set_ylabel(f"{metric_name(spec.metric)} gain over {spec.baseline} (points)")
    ax1.set_title("Gain over the baseline: paper vs reproduced")
    _legend_below(ax1, 1)
    ax2.scatter(
        runs["x"] + _seed_offsets(runs["seed"], 0.12), runs["value"], color="C0", alpha=0.6, s=22, label="one seed"
    )
    sns.lineplot(data=runs, x="x", y="value", errorbar="sd", color="C0", ax=ax2, label="mean ± sd")
    ax2.set_ylabel(f"{metric_name(spec.metric)} (%)")
    ax2.set_title(f"Reproduced, every seed ({table.tag} scale)")
    _legend_below(ax2)
    for ax in (ax1, ax2):
        ax.set_xlabel(spec.report.get("x_label", "x"))
        ax.set_xticks(sorted(s["x"].unique()))
    return fig


def _series(table, summary, runs, plt):
    """Paper (left) and ours (right) along x, one line per series (e.g. two head types)."""
    import seaborn as sns

    spec = table.spec
    paper_label, ours_label = _labels(table)
    series_of = runs.drop_duplicates("variant").set_index("variant")["series"]
    x_of = runs.drop_duplicates("variant").set_index("variant")["x"]
    s = summary[summary.n > 0].assign(series=lambda d: d["variant"].map(series_of), x=lambda d: d["variant"].map(x_of))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5.0), sharex=True)
    palette = dict(zip(dict.fromkeys(s["series"]), sns.color_palette("tab10")))
    for name, group in s.groupby("series", sort=False):
        g = group.sort_values("x")
        ax1.plot(g["x"], g["paper"], "o-" if len(g) > 1 else "s", color=palette[name], label=name)
    _ours_lines(runs, "series", palette, ax2)
    ax1.set_title(paper_label)
    ax2.set_title(ours_label)
    for ax in (ax1, ax2):
        ax.set_xlabel(spec.report.get("x_label", "x"))
        ax.set_ylabel(f"{metric_name(spec.metric)} (%)")
        ax.set_xticks(sorted(s["x"].unique()))
        _legend_below(ax, 3)
    return fig


def _columns(table, runs, plt):
    """Paper (left) and ours (right) along the page's columns, one line per variant."""
    import seaborn as sns

    spec = table.spec
    paper_label, ours_label = _labels(table)
    columns = list(spec.report["columns"])
    ran = list(dict.fromkeys(runs["variant"]))
    palette = dict(zip(ran, sns.color_palette("tab10")))
    ours = pd.DataFrame(
        [
            {"variant": r.variant, "x": i, "value": 100 * r.metrics.get(c, np.nan)}
            for r in runs.itertuples()
            for i, c in enumerate(columns)
        ]
    )
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5.0), sharex=True)
    for variant in spec.variants:
        points = [(i, variant.paper[c]) for i, c in enumerate(columns) if c in variant.paper]
        if variant.name in palette and points:
            ax1.plot(*zip(*points), "o-", color=palette[variant.name], label=variant.name)
    _ours_lines(ours, "variant", palette, ax2)
    ax1.set_title(paper_label)
    ax2.set_title(ours_label)
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels([metric_name(c) for c in columns])
        ax.set_xlabel(spec.report.get("x_label", ""))
        ax.set_ylabel("value (%)")
        _legend_below(ax, 3)
    return fig


def _ours_lines(data: pd.DataFrame, hue: str, palette: dict, ax) -> None:
    """Our values along x, one line per ``hue`` value in ``palette``'s order, mean ± sd bars."""
    import seaborn as sns

    sns.lineplot(
        data=data, x="x", y="value", hue=hue, hue_order=list(palette), palette=palette,
        errorbar="sd", err_style="bars", marker="o", ax=ax,
    )  # fmt: skip


def _variants(table, summary, runs, plt):
    """Left: gain over the baseline per variant, paper vs ours; right: our value per seed."""
    import seaborn as sns

    spec = table.spec
    paper_label, ours_label = _labels(table)
    s = summary[summary.n > 0].reset_index(drop=True)
    y = np.arange(len(s))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.9 + 0.55 * len(s) + 1.6))
    paper = s["paper_delta"]
    if paper.notna().any():  # a table without paper numbers: no paper bars, no paper legend entry
        known = paper.notna()
        ax1.barh(y[known] - 0.2, paper[known], height=0.38, color="0.6", label=paper_label)
        zero = known & (paper == 0)  # a zero gain is a value, not an empty slot: mark it
        ax1.scatter(np.zeros(int(zero.sum())), y[zero] - 0.2, marker="|", s=160, color="0.35", zorder=3)
    ax1.barh(y + 0.2, s["delta"], height=0.38, xerr=s["delta_sd"].fillna(0), color="C0", capsize=3, label=ours_label)
    ax1.axvline(0, color="0.3", lw=0.8)
    ax1.set_xlabel(f"{metric_name(spec.metric)} gain over {spec.baseline} (points)")
    _legend_below(ax1, 1)
    order = {v: i for i, v in enumerate(s["variant"])}
    shown = runs[runs.variant.isin(order)]
    ax2.scatter(
        shown["value"],
        shown["variant"].map(order) + _seed_offsets(shown["seed"], 0.12),
        color="C0",
        alpha=0.7,
        s=22,
        label="one seed",
    )
    sns.pointplot(
        data=shown,
        x="value",
        y="variant",
        order=list(order),
        errorbar="sd",
        linestyle="none",
        color="C3",
        marker="|",
        markersize=14,
        capsize=0.2,
        ax=ax2,
        label="mean ± sd",
    )
    ax2.set_xlabel(f"{metric_name(spec.metric)} (%), ours, {table.tag} scale")
    ax2.set_ylabel("")
    _legend_below(ax2)
    ax1.set_yticks(y)
    ax1.set_yticklabels(s["variant"])
    ax1.invert_yaxis()
    ax2.set_yticklabels([])
    return fig


OUTCOME_COLOURS = {
    "holds": "#2a9d48",
    "undecided": "#8c8c8c",
    "reversed": "#d1352b",
    "differs": "#e08a1e",
    "not testable": "#6a8cc7",
    "incomplete": "#c6c6c6",
}


def forest(claims: list[tuple[str, object]], path: Path) -> None:
    """Every pairwise claim (``(paper, CheckResult)``) as a point with its interval, signed so that
    the paper's direction is positive, the paper's effect as a diamond, coloured by outcome and
    grouped by paper (the index's first figure)."""
    plt = plotting.pyplot()
    drawn = [(paper, r) for paper, r in claims if r.kind == "pairwise" and r.n > 0]
    height = max(2.5, 0.22 * (len(drawn) + 2 * len({p for p, _ in drawn})) + 1.2)
    fig, ax = plt.subplots(figsize=(9.5, height))
    y, ticks, labels, previous = 0, [], [], None
    for paper, r in drawn:
        if paper != previous:  # a gap and a header per paper
            y += 1.2 if previous is not None else 0
            ax.text(
                -0.01, y, paper, transform=ax.get_yaxis_transform(), ha="right", va="center", weight="bold", fontsize=8
            )
            y += 1
            previous = paper
        sign = -1.0 if r.expect == "less" else 1.0
        low, high = sorted((sign * r.ci_low, sign * r.ci_high))
        colour = OUTCOME_COLOURS.get(r.outcome, "#8c8c8c")
        if r.expect == "similar" and r.margin is not None:
            ax.fill_betweenx([y - 0.35, y + 0.35], -r.margin, r.margin, color=colour, alpha=0.12, lw=0)
        if np.isfinite(low) and np.isfinite(high):
            ax.plot([low, high], [y, y], color=colour, lw=1.6)
        ax.plot(sign * r.delta, y, "o", color=colour, ms=4)
        if np.isfinite(r.paper_delta):
            ax.plot(sign * r.paper_delta, y, "D", mfc="none", mec="black", ms=4, mew=0.8)
        ticks.append(y)
        labels.append(r.claim if len(r.claim) <= 70 else r.claim[:67] + "...")
        y += 1
    ax.set_yticks(ticks, labels, fontsize=6.5)
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=2.0)
    reach = max(
        [2.0] + [abs(v) for _, r in drawn for v in (r.ci_low, r.ci_high, r.delta, r.paper_delta) if np.isfinite(v)]
    )
    steps = [t for t in (1, 2, 5, 10, 30, 100) if t <= reach * 1.2]
    ax.set_xticks(
        [-t for t in reversed(steps)] + [0] + steps,
        [f"{-t:g}" for t in reversed(steps)] + ["0"] + [f"+{t:g}" for t in steps],
    )
    ax.set_xlim(-reach * 1.3, reach * 1.3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(
        "effect (points) in the paper's direction: ours, dot and 95% interval; the paper's, diamond", fontsize=8
    )
    handles = [plt.Line2D([], [], color=c, marker="o", lw=1.6, label=o) for o, c in OUTCOME_COLOURS.items()]
    handles.append(plt.Line2D([], [], color="black", marker="D", mfc="none", lw=0, label="paper"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=6, fontsize=7, frameon=True)
    ax.set_ylim(y + 0.5, -2.5)
    fig.tight_layout()
    plotting.save(fig, path)
