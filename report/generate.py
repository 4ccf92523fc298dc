"""Generate the markdown report and figures from spec files and result JSON files.

Per ablation page: the paper table beside ours (mean +- std over seeds, deltas vs the
baseline), a figure, a verdict on the claim, where the gain comes from (boundary band vs
interior, per class), and how the numbers were obtained. index.md lists every ablation with
its verdict. Output is deterministic: the same files give byte-identical pages and figures.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from report import icnet_timing, plotting
from report.checks import CI_LEVEL, judge_all, seeds_phrase, table_verdict

ROOT = Path(__file__).resolve().parent.parent
METRIC_NAMES = {"miou": "mIoU", "pixel_acc": "pixel acc.", "mean_acc": "mean acc.",
                "boundary_miou": "boundary-band mIoU", "interior_miou": "interior mIoU",
                "boundary_pixel_acc": "boundary-band acc.", "interior_pixel_acc": "interior acc."}


@dataclass
class Verdict:
    label: str          # "reproduced" | "partially reproduced" | "not reproduced" | "no results"
    sentence: str       # one plain sentence for index.md
    details: list[str]  # the measured figures behind it


def _get(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


SPLITS = {"val": "metrics", "holdout": "holdout_metrics"}


def load_results(results_dir: Path, ablation: str, scale: str, split: str = "val") -> list[dict]:
    """Result records of one scale directory (the canonical scale, or an override tag).

    ``split="holdout"`` judges the runs on the part of the training data they held out
    (``holdout_metrics``): that is where choices of schedule or hyperparameters are made.
    """
    directory = results_dir / ablation / scale
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise SystemExit(f"error: {path}: not valid JSON ({e}); delete it and re-run the ablation") from None
        if split != "val":
            if not record.get(SPLITS[split]):
                raise SystemExit(f"error: {path}: no {SPLITS[split]} (the run held out no data: data.holdout_images)")
            record = dict(record, metrics=record[SPLITS[split]])
        records.append(record)
    return records


def frame(spec: dict, records: list[dict]) -> pd.DataFrame:
    """One row per run of a variant still in the spec; metric values in percent."""
    metric = spec["metric"]
    names = [v["name"] for v in spec["variants"]]
    x_key = spec.get("report", {}).get("x")
    x_default = spec.get("report", {}).get("x_default")
    rows = []
    for r in records:
        if r["variant"] not in names:
            continue
        m = r["metrics"]
        x = _get(r["config"], x_key) if x_key else None
        c = r["complexity"]
        rows.append({
            "variant": r["variant"], "seed": r["seed"], "value": 100 * m[metric], "metrics": m,
            "backbone": r["config"]["model"].get("backbone"),
            "params_backbone": c.get("params_backbone"), "macs_backbone": c.get("macs_backbone"),
            "params_decoder": c.get("params_decoder"), "macs_decoder": c.get("macs_decoder"), "macs_total": c.get("macs_total"),
            "head_weights_paper_config": c.get("head_weights_paper_config"),
            "boundary_miou": 100 * m["boundary_miou"] if "boundary_miou" in m else math.nan,
            "interior_miou": 100 * m["interior_miou"] if "interior_miou" in m else math.nan,
            "head_weights": r["complexity"].get("head_weights"), "params_head": r["complexity"].get("params_head"),
            "macs_head": r["complexity"].get("macs_head"), "params_total": r["complexity"]["params_total"],
            "wall_s": r["timing"]["wall_s"], "x": x if x is not None else x_default,
            "per_class_iou": m.get("per_class_iou"), "record": r,
        })
    df = pd.DataFrame(rows)
    if not df.empty:
        df["order"] = df["variant"].map({n: i for i, n in enumerate(names)})
        df = df.sort_values(["order", "seed"]).reset_index(drop=True)
    return df


def summarise(spec: dict, df: pd.DataFrame) -> pd.DataFrame:
    """Per variant (spec order): paper value, our mean/std/n, deltas vs the baseline."""
    metric = spec["metric"]
    rows = []
    base_paper = next((v.get("paper", {}).get(metric) for v in spec["variants"] if v["name"] == spec["baseline"]), None)
    base = df[df.variant == spec["baseline"]].set_index("seed")["value"] if not df.empty else pd.Series(dtype=float)
    for v in spec["variants"]:
        runs = df[df.variant == v["name"]] if not df.empty else df
        paper = v.get("paper", {}).get(metric)
        values = runs["value"] if not runs.empty else pd.Series(dtype=float)
        paired = (runs.set_index("seed")["value"] - base).dropna() if not runs.empty else pd.Series(dtype=float)
        rows.append({
            "variant": v["name"],
            "paper": paper,
            "mean": values.mean() if len(values) else math.nan,
            "std": values.std(ddof=1) if len(values) > 1 else math.nan,
            "n": len(values),
            "paper_delta": paper - base_paper if paper is not None and base_paper is not None else math.nan,
            "delta": paired.mean() if len(paired) else math.nan,
            "delta_std": paired.std(ddof=1) if len(paired) > 1 else math.nan,
            "head_weights": runs["head_weights"].iloc[0] if not runs.empty else None,
            "macs_head": runs["macs_head"].iloc[0] if not runs.empty else None,
            "boundary_miou": runs["boundary_miou"].mean() if not runs.empty else math.nan,
            "interior_miou": runs["interior_miou"].mean() if not runs.empty else math.nan,
            "x": runs["x"].iloc[0] if not runs.empty else None,
            "paper_head_weights_k": v.get("paper", {}).get("head_weights_k"),
            **{key: _first(runs, key) for key in ("head_weights_paper_config", "backbone", "params_backbone",
                                                  "macs_backbone", "params_decoder", "macs_decoder", "macs_total")},
            **{f"paper_{c}": v.get("paper", {}).get(c) for c in spec.get("report", {}).get("columns", [])},
            **{f"ours_{c}": _metric_mean_std(runs, c) for c in spec.get("report", {}).get("columns", [])},
        })
    return pd.DataFrame(rows)


def _first(runs: pd.DataFrame, key: str):
    if runs.empty or key not in runs or runs[key].isna().all():
        return None
    return runs[key].dropna().iloc[0]


def _metric_mean_std(runs: pd.DataFrame, metric: str) -> tuple[float, float]:
    values = pd.Series([100 * m.get(metric, math.nan) for m in runs["metrics"]], dtype=float) if not runs.empty else pd.Series(dtype=float)
    return (values.mean() if len(values) else math.nan, values.std(ddof=1) if len(values) > 1 else math.nan)


def verdict(spec: dict, summary: pd.DataFrame, df: pd.DataFrame | None = None) -> Verdict:
    """The table's verdict from its claims (``[[report.checks]]``), each judged on its own."""
    df = df if df is not None else pd.DataFrame()
    if summary[summary.n > 0].empty:
        return Verdict("no results", "not run yet", [])
    results = judge_all(spec, df)
    tv = table_verdict(results)
    details = [
        f"Each claim is judged on the per-seed paired differences of its two variants (same seed, same data order, "
        f"same pretrained backbone): a {100 * CI_LEVEL:g}% Student-t interval for their mean. A claimed difference "
        "*holds* when the interval excludes zero on the claimed side, is *reversed* when it excludes zero on the "
        "other side, and is *undecided* otherwise; an *about equal* claim holds when the whole interval lies within "
        "the spec's margin and *differs* when it lies wholly outside it. An ordering claim compares the paper's "
        "ranking of the variants with ours (Spearman's rho against a threshold). See the claims table below."]
    return Verdict(tv.label, tv.sentence, details)


def _claims_table(spec: dict, df: pd.DataFrame) -> list[str]:
    results = judge_all(spec, df)
    if not results:
        return []
    rows = []
    for r in results:
        if r.kind == "ordering":
            compared, ours, ci = "all variants with a paper value", _fmt(r.delta, ".2f"), f"needs rho >= {r.min_rho:g}"
            paper = "-"
        else:
            compared = f"{r.a} vs {r.b}"
            paper = _fmt(r.paper_delta, "+.1f")
            ours = "-" if r.n == 0 else f"{r.delta:+.2f} ± {_fmt(r.delta_sd, '.2f')} (n={r.n})"
            ci = "-" if math.isnan(r.ci_low) else f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
            if r.expect == "similar":
                ci += f" vs ±{r.margin:g}"
        outcome = f"**{r.outcome}**" if r.holds else r.outcome
        if r.outcome == "undecided":
            outcome += f" ({seeds_phrase(r)})"
        elif r.outcome == "incomplete":
            outcome += f" ({r.missing})"
        rows.append({"claim": r.claim, "compared": compared, "metric": METRIC_NAMES.get(r.metric, r.metric),
                     "Δ paper": paper, "Δ ours": ours, f"{100 * CI_LEVEL:g}% CI": ci, "outcome": outcome})
    return ["## Claims", "",
            pd.DataFrame(rows).to_markdown(index=False, colalign=["left", "left", "left", "right", "right", "right", "left"],
                                           disable_numparse=True), "",
            f"Δ = a - b in points; ours is the mean ± sd of the per-seed differences (n seeds). The interval is the "
            f"two-sided {100 * CI_LEVEL:g}% Student-t interval of that mean; for *about equal* claims it is compared "
            "with the spec's equivalence margin. For an ordering claim, Δ ours is Spearman's rho between the paper's "
            "values and our seed means. *Seeds to decide* assumes the observed mean and sd of the differences stay "
            "as they are.", ""]


def _fmt(v, spec: str = ".1f", missing: str = "-") -> str:
    return missing if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _thousands(n) -> str:
    return "-" if n is None or (isinstance(n, float) and math.isnan(n)) else f"{int(n):,}"


def figure(spec: dict, summary: pd.DataFrame, df: pd.DataFrame, path: Path) -> bool:
    """Paper vs ours: along ``report.x`` (one line per ``report.series`` value when given), or per variant."""
    if df.empty:
        return False
    plt = plotting.pyplot()
    report = spec.get("report", {})
    if report.get("x") and report.get("series"):
        fig = _figure_series(spec, summary, df, plt)
    elif report.get("x") and not summary["x"].isna().all():
        fig = _figure_sweep(spec, summary, df, plt)
    else:
        fig = _figure_variants(spec, summary, df, plt)
    fig.suptitle(f"{spec['title']} ({spec['paper_table']})")
    fig.tight_layout()
    plotting.save(fig, path)
    return True


def _seed_offsets(df: pd.DataFrame, step: float) -> pd.Series:
    seeds = sorted(df["seed"].unique())
    return df["seed"].map({sd: step * (i - (len(seeds) - 1) / 2) for i, sd in enumerate(seeds)})  # no random jitter


def _figure_sweep(spec, summary, df, plt):
    """Two panels: delta vs baseline (paper and ours, same axis); our absolute values per seed."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    s = summary[summary.n > 0].sort_values("x")
    ax1.plot(s["x"], s["paper_delta"], "o--", color="0.35", label="paper (VOC 2012 val)")
    ax1.errorbar(s["x"], s["delta"], yerr=s["delta_std"].fillna(0), fmt="o-", color="C0", capsize=3,
                 label=f"ours, mini scale (mean, std over {int(s.n.min())} seeds)")
    ax1.axhline(0, color="0.6", lw=0.8)
    ax1.set_xlabel(spec.get("report", {}).get("x_label", "x"))
    ax1.set_ylabel(f"{spec['metric']} gain over {spec['baseline']} (points)")
    ax1.set_title("Gain over the baseline: paper vs reproduced")
    ax1.legend(loc="upper left", fontsize=9)
    ax2.scatter(df["x"] + _seed_offsets(df, 0.12), df["value"], color="C0", alpha=0.6, s=22, label="one seed")
    ax2.plot(s["x"], s["mean"], "-", color="C0", label="mean over seeds")
    ax2.set_xlabel(spec.get("report", {}).get("x_label", "x"))
    ax2.set_ylabel(f"{spec['metric']} (%)")
    ax2.set_title("Reproduced, every seed (mini scale)")
    ax2.legend(loc="lower right", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_xticks(sorted(s["x"].unique()))
    return fig


def _figure_series(spec, summary, df, plt):
    """Paper (left) and ours (right) against x, one line per series (e.g. GCN vs trivial conv)."""
    report = spec["report"]
    series_key = report["series"]
    labels = report.get("series_labels", {})
    series_of = {r["variant"]: str(_get(r["record"]["config"], series_key)) for _, r in df.drop_duplicates("variant").iterrows()}
    s = summary[summary.n > 0].copy()
    s["series"] = s["variant"].map(series_of)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for i, (name, group) in enumerate(s.groupby("series", sort=False)):
        g = group.sort_values("x")
        label = labels.get(name, name)
        style = "o-" if len(g) > 1 else "s"
        ax1.plot(g["x"], g["paper"], style, color=f"C{i}", label=label)
        ax2.errorbar(g["x"], g["mean"], yerr=g["std"].fillna(0), fmt=style, color=f"C{i}", capsize=3, label=label)
    ax1.set_title("Paper (VOC 2012 val)")
    ax2.set_title(f"Ours, mini scale (mean, std over {int(s.n.min())} seeds)")
    for ax in (ax1, ax2):
        ax.set_xlabel(report.get("x_label", "x"))
        ax.set_ylabel(f"{METRIC_NAMES.get(spec['metric'], spec['metric'])} (%)")
        ax.set_xticks(sorted(s["x"].unique()))
        ax.legend(fontsize=9)
    return fig


def _figure_variants(spec, summary, df, plt):
    """Left: gain over the baseline per variant, paper vs ours; right: our value per seed."""
    import numpy as np

    s = summary[summary.n > 0].reset_index(drop=True)
    y = np.arange(len(s))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.9 + 0.55 * len(s) + 1.6))
    ax1.barh(y - 0.2, s["paper_delta"].fillna(0), height=0.38, color="0.6", label="paper (VOC 2012 val)")
    ax1.barh(y + 0.2, s["delta"], height=0.38, xerr=s["delta_std"].fillna(0), color="C0", capsize=3,
             label=f"ours, mini (mean, std over {int(s.n.min())} seeds)")
    ax1.axvline(0, color="0.3", lw=0.8)
    ax1.set_xlabel(f"{METRIC_NAMES.get(spec['metric'], spec['metric'])} gain over {spec['baseline']} (points)")
    ax1.legend(fontsize=9, loc="best")
    order = {v: i for i, v in enumerate(s["variant"])}
    runs = df[df.variant.isin(order)]
    ax2.scatter(runs["value"], runs["variant"].map(order) + _seed_offsets(runs, 0.12), color="C0", alpha=0.7, s=22, label="one seed")
    ax2.scatter(s["mean"], y, marker="|", s=300, color="C3", label="mean")
    ax2.set_xlabel(f"{METRIC_NAMES.get(spec['metric'], spec['metric'])} (%), ours, mini scale")
    ax2.legend(fontsize=9, loc="best")
    for ax in (ax1, ax2):
        ax.set_yticks(y)
        ax.set_yticklabels(s["variant"])
        ax.invert_yaxis()
    ax2.set_yticklabels([])
    return fig


def page(spec: dict, scale: str, df: pd.DataFrame, summary: pd.DataFrame, v: Verdict, fig_rel: str | None) -> str:
    scale_block = spec["scales"][scale]
    lines = [f"# {spec['title']}", "",
             f"**Source:** {spec['source']}  ", f"**Claim:** {spec['claim']}  ",
             f"**Scale:** `{scale}` — {scale_block.get('description', '')}. "
             "Mini-scale numbers come from the embedded synthetic dataset: compare *shapes and signs*, "
             "not absolute values, with the paper's VOC numbers.", "",
             f"## Verdict: {v.label}", "", v.sentence[0].upper() + v.sentence[1:] + ".", ""]
    lines += [f"- {d}" for d in v.details]
    if spec.get("report", {}).get("discussion"):
        lines += ["", "**Our reading.** " + " ".join(spec["report"]["discussion"].split())]
    if spec.get("report", {}).get("notes"):
        lines += ["", "**Protocol notes.** " + " ".join(spec["report"]["notes"].split())]
    lines += ["", "## Table", ""]
    lines += _main_table(spec, summary)
    lines += _claims_table(spec, df)
    lines += _backbone_table(df)
    if fig_rel:
        lines += [f"![{spec['title']}]({fig_rel})", ""]
    if not df.empty and not summary["interior_miou"].isna().all():
        band = float(df["record"].iloc[0]["metrics"].get("band_width_px", 0))
        lines += ["## Where the gain comes from", "",
                  f"mIoU (%) on the boundary band and on the interior, mean over seeds. The band is every labelled "
                  f"pixel whose centre lies within {band:g} px (Euclidean) of a label change, a pixel edge between "
                  "4-neighbours with different labels (void and padding are no label: a void outline contributes its "
                  "middle line, padding nothing). That is Large Kernel Matters' 7 px at 512 px scaled by the image side; "
                  "a pixel next to a straight change is 0.5 px from it. The interior is every other labelled pixel.", ""]
        t = summary[summary.n > 0][["variant", "boundary_miou", "interior_miou"]].copy()
        t.columns = ["variant", "boundary band mIoU", "interior mIoU"]
        lines += [t.to_markdown(index=False, floatfmt=".2f"), ""]
        classes = _class_names(df)
        if classes:
            pcs = []
            for name in [spec["baseline"], spec.get("headline")]:
                runs = df[df.variant == name] if name else df.iloc[0:0]
                if runs.empty:
                    continue
                per = pd.DataFrame([[math.nan if x is None else 100 * x for x in p] for p in runs["per_class_iou"]]).mean()
                pcs.append({"variant": name, **{c: per[i] for i, c in enumerate(classes)}})
            lines += ["Per-class IoU (%), mean over seeds:", "", pd.DataFrame(pcs).to_markdown(index=False, floatfmt=".1f"), ""]
    lines += _provenance(df, scale_block)
    return "\n".join(lines) + "\n"


def _main_table(spec: dict, summary: pd.DataFrame) -> list[str]:
    metric = spec["metric"]
    columns = spec.get("report", {}).get("columns", [])
    single_head = summary["head_weights"].notna().any()
    paper_config = summary["head_weights_paper_config"].notna().any()
    table = []
    for _, r in summary.iterrows():
        row = {"variant": r["variant"]}
        if single_head:
            row["head weights (mini)"] = _thousands(r["head_weights"])
            row["head MMACs (mini)"] = _fmt(r["macs_head"] / 1e6 if r["macs_head"] is not None else None, ".2f")
        else:
            row["decoder params (mini)"] = _thousands(r["params_decoder"])
            row["decoder MMACs (mini)"] = _fmt(r["macs_decoder"] / 1e6 if r["macs_decoder"] is not None else None, ".2f")
            row["model MMACs (mini)"] = _fmt(r["macs_total"] / 1e6 if r["macs_total"] is not None else None, ".1f")
        if paper_config:
            paper_k = r["paper_head_weights_k"]
            row["weights at paper config: paper"] = "-" if paper_k is None or pd.isna(paper_k) else f"{int(paper_k):,}K"
            row["weights at paper config: ours"] = _thousands(r["head_weights_paper_config"])
        for c in columns:
            if c == metric:
                continue
            mean, std = r[f"ours_{c}"]
            row[f"paper {METRIC_NAMES[c]} (%)"] = _fmt(r[f"paper_{c}"])
            row[f"ours {METRIC_NAMES[c]} (%)"] = "not run" if r["n"] == 0 else f"{mean:.2f} ± {_fmt(std, '.2f')}"
        row[f"paper {METRIC_NAMES.get(metric, metric)} (%)"] = _fmt(r["paper"])
        row[f"ours {METRIC_NAMES.get(metric, metric)} (%)"] = "not run" if r["n"] == 0 else f"{r['mean']:.2f} ± {_fmt(r['std'], '.2f')} (n={r['n']})"
        row["Δ paper"] = _fmt(r["paper_delta"], "+.1f")
        row["Δ ours"] = _fmt(r["delta"], "+.2f")
        table.append(row)
    frame_ = pd.DataFrame(table)
    lines = [frame_.to_markdown(index=False, colalign=["left"] + ["right"] * (frame_.shape[1] - 1), disable_numparse=True)]
    notes = [f"Δ = difference to `{spec['baseline']}` in points; ours is the mean of per-seed differences. "
             "± is the sample std over seeds."]
    if single_head:
        notes.append("Head weights count convolution weights only (the paper's convention); MACs are multiply-accumulates "
                     "of the head at batch 1 on the mini top map.")
    else:
        notes.append("Decoder = everything trained on top of the frozen backbone (all parameters); model MACs include "
                     "the backbone (for ICNet: the trunk run on the 1/2 and 1/4 images). MACs are multiply-accumulates "
                     "at batch 1 on one mini-scale image.")
    if paper_config:
        pc = summary.dropna(subset=["head_weights_paper_config"])
        notes.append("*Weights at paper config*: the same head built with the paper's 2048 input channels and 21 classes "
                     "(and the paper's width m), counted by our code, next to the paper's figure.")
        if not pc.empty:
            off = [(r["variant"], int(r["head_weights_paper_config"]), int(r["paper_head_weights_k"]) * 1000)
                   for _, r in pc.iterrows() if r["paper_head_weights_k"] is not None and not pd.isna(r["paper_head_weights_k"])]
            worst = max((abs(o - p) for _, o, p in off), default=0)
            notes.append(f"Largest difference to the paper's count: {worst:,} weights (the paper rounds or truncates to thousands).")
    return lines + ["", " ".join(notes), ""]


def _backbone_table(df: pd.DataFrame) -> list[str]:
    """Backbones side by side, when the variants use more than one."""
    if df.empty or df["backbone"].nunique() < 2:
        return []
    rows = []
    for name, group in df.groupby("backbone", sort=False):
        r = group.iloc[0]
        pre = r["record"].get("pretrained_backbone") or {}
        rows.append({"backbone": f"`{name}`", "params": _thousands(r["params_backbone"]),
                     "MMACs (64 px image)": _fmt(r["macs_backbone"] / 1e6 if r["macs_backbone"] is not None else None, ".1f"),
                     "pretraining final loss": _fmt(pre.get("final_loss"), ".4f")})
    return ["## Backbones", "",
            pd.DataFrame(rows).to_markdown(index=False, colalign=["left", "right", "right", "right"], disable_numparse=True), "",
            "All parameters (BN included); MACs = multiply-accumulates of one forward pass at batch 1 "
            "(`torch.utils.flop_counter`, FLOPs / 2). The pretraining loss (dense cross-entropy with a 1x1 head on the "
            "synthetic `pretrain` split, last logged step) stands in for the paper's ImageNet error.", ""]


def _class_names(df: pd.DataFrame) -> list[str] | None:
    data = df["record"].iloc[0]["config"]["data"]
    if data.get("name") == "shapes":
        return ["background", "disk", "square", "triangle", "cross"]
    return None


def _provenance(df: pd.DataFrame, scale_block: dict) -> list[str]:
    if df.empty:
        return []
    first = df["record"].iloc[0]
    cfg = first["config"]
    commits = sorted({(r["provenance"].get("git_commit") or "unknown")[:10] + (" (dirty)" if r["provenance"].get("git_dirty") else "")
                      for r in df["record"]})
    pre = first.get("pretrained_backbone")
    out = ["## How these numbers were obtained", "",
           f"- Runs: {len(df)} ({df.variant.nunique()} variants x seeds {sorted(df.seed.unique().tolist())}); "
           f"total run time {df.wall_s.sum():.0f} s on {first['provenance']['device']} "
           f"({first['provenance']['threads']} thread per run), torch {first['provenance']['torch']}.",
           f"- Backbone `{cfg['model'].get('backbone')}` ({_thousands(first['complexity']['params_total'] - (first['complexity'].get('params_head') or 0))} parameters)"
           + (f", pretrained once ({pre['steps']} steps, cached as {pre['hash'][:12]}) and frozen" if pre else "") + ".",
           f"- Data: `{json.dumps(cfg['data'], sort_keys=True)}`.",
           f"- Training: `{json.dumps(cfg['train'], sort_keys=True)}`.",
           f"- Code: commit {', '.join(commits)}. Raw results: `results/{first['ablation']}/{first['scale_tag']}/` (one JSON per run).",
           ""]
    return out


def load_spec_file(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise SystemExit(f"error: {path}: not valid TOML ({e})") from None


def generate(specs_dir: Path, results_dir: Path, out_dir: Path, *, split: str = "val", tag: str | None = None) -> list[Path]:
    """Write index.md, one page per spec and its figure; returns the written paths.

    ``tag`` (e.g. ``mini+1a2b3c``) renders the override runs of that tag instead of the
    canonical scales, for the specs that have them; ``split`` picks val or held-out metrics.
    """
    written = []
    index_rows = []
    for spec_path in sorted(specs_dir.glob("*.toml")):
        spec = load_spec_file(spec_path)
        if tag is not None:
            if tag.split("+")[0] not in spec["scales"] or not (results_dir / spec["id"] / tag).is_dir():
                continue
            spec = dict(spec, scales={**spec["scales"], tag: spec["scales"][tag.split("+")[0]]})
            scales = [tag]
        else:
            scales = [s for s in spec["scales"] if s == "mini" or (results_dir / spec["id"] / s).exists()]
        for scale in scales:
            df = frame(spec, load_results(results_dir, spec["id"], scale, split))
            summary = summarise(spec, df)
            v = verdict(spec, summary, df)
            suffix = "" if scale == "mini" else f"-{scale}"
            fig_path = out_dir / "figures" / f"{spec['id']}{suffix}.png"
            has_fig = figure(spec, summary, df, fig_path)
            if has_fig:
                written.append(fig_path)
            page_path = out_dir / f"{spec['id']}{suffix}.md"
            text = page(spec, scale, df, summary, v, f"figures/{fig_path.name}" if has_fig else None)
            if split != "val":
                title, rest = text.split("\n", 1)
                text = (f"{title}\n\n> **Judged on the {split} split** (the training data each run held out), not on "
                        "val: a side report for choices of schedule or hyperparameters, never the published numbers.\n" + rest)
            _write(page_path, text)
            written.append(page_path)
            n_runs = f"{int(summary.n.sum())}/{len(spec['variants']) * len(spec['scales'][scale]['seeds'])}"
            index_rows.append({"ablation": f"[{spec['title']}]({page_path.name})", "paper table": spec["paper_table"],
                               "scale": scale, "runs": n_runs, "verdict": v.sentence})
    if tag is None and split == "val":
        written += _timing_pages(results_dir, out_dir, index_rows)
    index_rows.sort(key=lambda row: _natural(row["paper table"]))  # by paper, then table number
    lines = ["# segbench report", "",
             "Each row is one paper table re-run as an ablation spec (`ablations/specs/`). Mini-scale rows use the "
             "embedded synthetic dataset on CPU: they test whether the paper's *mechanism* shows, not its absolute "
             "numbers. Regenerate with `nox -s report` (or `python -m report`).", "",
             pd.DataFrame(index_rows).to_markdown(index=False) if index_rows else "No specs found.", ""]
    _write(out_dir / "index.md", "\n".join(lines))
    written.append(out_dir / "index.md")
    return written


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _timing_pages(results_dir: Path, out_dir: Path, index_rows: list[dict]) -> list[Path]:
    """One ICNet timing page per benchmark JSON (``results/benchmarks/icnet-<device>.json``)."""
    written = []
    for path in sorted((results_dir / "benchmarks").glob("icnet-*.json")):
        df = icnet_timing.load(path)
        if df.empty:
            continue
        device = path.stem.removeprefix("icnet-")
        suffix = "" if device == "cpu" else f"-{device}"
        fig_path = out_dir / "figures" / f"icnet-timing{suffix}.png"
        has_fig = icnet_timing.stage_figure(df, fig_path)
        if has_fig:
            written.append(fig_path)
        text, summary = icnet_timing.page(df, path.relative_to(results_dir.parent) if path.is_relative_to(results_dir.parent) else path,
                                          f"figures/{fig_path.name}" if has_fig else None)
        page_path = out_dir / f"icnet-timing{suffix}.md"
        _write(page_path, text)
        written.append(page_path)
        index_rows.append({"ablation": f"[ICNet timing ({device})]({page_path.name})", "paper table": "ICNet, Fig. 1b, Fig. 5, Tables 1-3",
                           "scale": "paper resolution", "runs": f"{len(df)} benchmarks", "verdict": summary})
    return written


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m report", description="Regenerate the markdown report.")
    p.add_argument("--specs", type=Path, default=ROOT / "ablations" / "specs")
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--out", type=Path, default=ROOT / "report")
    p.add_argument("--split", choices=sorted(SPLITS), default="val",
                   help="judge on val (the report) or on the held-out training data (for choices; use another --out)")
    p.add_argument("--tag", help="render the override runs of this scale tag (e.g. mini+1a2b3c) instead of the canonical ones")
    args = p.parse_args(argv)
    if (args.split != "val" or args.tag) and args.out.resolve() == (ROOT / "report").resolve():
        p.error("--split holdout and --tag write a side report: give it its own --out")
    for path in generate(args.specs, args.results, args.out, split=args.split, tag=args.tag):
        print(path, file=sys.stderr)
    return 0
