"""The tables of a page: per-variant summaries (pandas) rendered as markdown (tabulate).

Which columns a table has comes from the spec: its metric, ``report.columns`` (more metrics,
paper vs ours), ``report.complexity`` (``<part>.<params|weights|macs>`` of the run's model) and
``report.paper_complexity`` (the same counted at the paper's configuration, beside the paper's
own figure, ``paper.<part>_<count>``).
"""

from __future__ import annotations

import math

import pandas as pd

from report.checks import CI_LEVEL, NOT_TESTABLE, CheckResult, check_id, seeds_phrase
from report.load import Table
from report.names import metric_name

COUNT_NAMES = {"params": "params", "weights": "weights", "macs": "MMACs"}


def fmt(v, spec: str = ".1f", missing: str = "-") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return missing
    return format(v, spec)


def count(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v):,}"


def markdown(frame: pd.DataFrame, align_first: str = "left") -> str:
    """A pipe table, first column left-aligned, the others right-aligned, cells as given."""
    return frame.to_markdown(
        index=False, colalign=[align_first] + ["right"] * (frame.shape[1] - 1), disable_numparse=True
    )


def values(table: Table, variant: str, metric: str) -> pd.Series:
    """Per-seed values (percent) of ``metric`` for ``variant``, indexed by seed."""
    runs = table.runs[table.runs.variant == variant] if not table.runs.empty else table.runs
    return pd.Series([100 * m.get(metric, math.nan) for m in runs["metrics"]], index=list(runs["seed"]), dtype=float)


def complexity_value(record: dict, column: str):
    """``<part>.<count>`` of a complexity record (``total`` is the whole model)."""
    part, what = column.split(".")
    node = record["total"] if part == "total" else record["parts"].get(part)
    value = None if node is None else node.get(what)
    return value / 1e6 if value is not None and what == "macs" else value


def summarise(table: Table) -> pd.DataFrame:
    """One row per variant (spec order): the paper's value and ours (mean, sd, n), the deltas
    to the baseline (ours: the mean of per-seed differences), and the spec's extra columns."""
    spec = table.spec
    base = values(table, spec.baseline, spec.metric)
    base_paper = next((v.paper.get(spec.metric) for v in spec.variants if v.name == spec.baseline), None)
    rows = []
    for v in spec.variants:
        ours = values(table, v.name, spec.metric)
        paired = (ours - base).dropna()
        runs = table.runs[table.runs.variant == v.name] if not table.runs.empty else table.runs
        first = runs["record"].iloc[0] if not runs.empty else None
        paper = v.paper.get(spec.metric)
        row = {
            "variant": v.name,
            "paper": paper,
            "mean": ours.mean() if len(ours) else math.nan,
            "sd": ours.std(ddof=1) if len(ours) > 1 else math.nan,
            "n": len(ours.dropna()),
            "paper_delta": paper - base_paper if paper is not None and base_paper is not None else math.nan,
            "delta": paired.mean() if len(paired) else math.nan,
            "delta_sd": paired.std(ddof=1) if len(paired) > 1 else math.nan,
            "record": first,
        }
        for metric in spec.report.get("columns", []):
            extra = values(table, v.name, metric)
            row[f"paper:{metric}"] = v.paper.get(metric)
            extra = extra.dropna()  # a metric some records lack: averaged over those that have it, n said
            row[f"ours:{metric}"] = (
                extra.mean() if len(extra) else math.nan,
                extra.std(ddof=1) if len(extra) > 1 else math.nan,
                len(extra),
            )
        for column in spec.report.get("complexity", []):
            row[f"mini:{column}"] = complexity_value(first["complexity"], column) if first is not None else None
        for key in spec.report.get("model_info", []):
            row[f"info:{key}"] = (first.get("model_info") or {}).get(key) if first is not None else None
        post = [(r["metrics"].get("postprocess_s"), r["config"]["data"]["val_images"]) for r in runs["record"]]
        per_image = [1000 * s / n for s, n in post if s is not None]
        row["postprocess_ms"] = sum(per_image) / len(per_image) if per_image else None
        for column in spec.report.get("paper_complexity", []):
            counted = (table.paper_models or {}).get(v.name)
            row[f"paper_config:{column}"] = complexity_value(counted, column) if counted else None
            row[f"paper_figure:{column}"] = v.paper.get(column.replace(".", "_"))
        rows.append(row)
    return pd.DataFrame(rows)


def _count_header(column: str, where: str) -> str:
    part, what = column.split(".")
    return f"{'model' if part == 'total' else part} {COUNT_NAMES[what]} ({where})"


def _paper_count(v) -> str:
    """The paper's figure as the paper writes it: 134.3M, 608K, or exact."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v >= 1e6 and round(v) % 100_000 == 0:
        return f"{v / 1e6:g}M"
    return f"{v / 1000:,.0f}K" if round(v) % 1000 == 0 else f"{int(v):,}"


def main_table(table: Table, summary: pd.DataFrame) -> list[str]:
    spec, scale = table.spec, table.scale
    metric = spec.metric
    failed = {f["variant"] for f in table.failed} - set(table.runs["variant"] if not table.runs.empty else ())
    rows = []
    for _, r in summary.iterrows():
        row = {"variant": r["variant"]}
        for key in spec.report.get("model_info", []):
            value = r[f"info:{key}"]
            paper = key.startswith("paper_")  # the paper's configuration, not this scale's
            label = f"{key.removeprefix('paper_').replace('_', ' ')} ({'paper' if paper else scale})"
            row[label] = "-" if value is None else ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        for column in spec.report.get("complexity", []):
            value = r[f"mini:{column}"]
            row[_count_header(column, scale)] = fmt(value, ".2f") if column.endswith(".macs") else count(value)
        if summary["postprocess_ms"].notna().any():
            row["post-processing ms/image"] = fmt(r["postprocess_ms"], ".1f")
        for column in spec.report.get("paper_complexity", []):
            part, what = column.split(".")
            row[f"{part} {COUNT_NAMES[what]} at paper config: paper"] = _paper_count(r[f"paper_figure:{column}"])
            row[f"{part} {COUNT_NAMES[what]} at paper config: ours"] = count(r[f"paper_config:{column}"])
        for c in spec.report.get("columns", []):
            if c == metric:
                continue
            mean, sd, n = r[f"ours:{c}"]
            row[f"paper {metric_name(c)} (%)"] = fmt(r[f"paper:{c}"])
            if r["n"] == 0:
                cell = "failed" if r["variant"] in failed else "not run"
            elif n == 0:
                cell = "not recorded"
            else:
                cell = f"{mean:.2f} ± {fmt(sd, '.2f')}" + (f" (n={n} of {r['n']})" if n < r["n"] else "")
            row[f"ours {metric_name(c)} (%)"] = cell
        row[f"paper {metric_name(metric)} (%)"] = fmt(r["paper"])
        row[f"ours {metric_name(metric)} (%)"] = (
            ("failed" if r["variant"] in failed else "not run")
            if r["n"] == 0
            else f"{r['mean']:.2f} ± {fmt(r['sd'], '.2f')} (n={r['n']})"
        )
        row["Δ paper"] = fmt(r["paper_delta"], "+.1f")
        row["Δ ours"] = fmt(r["delta"], "+.2f")
        rows.append(row)
    notes = [
        f"Δ = difference to `{spec.baseline}` in points; ours is the mean of per-seed differences. "
        "± is the sample standard deviation over seeds."
    ]
    if summary["postprocess_ms"].notna().any():
        notes.append(
            "Post-processing time: the evaluation's post-processor (e.g. a CRF) per val image, mean over seeds, on the "
            "run's machine and threads (its calibration figure is below)."
        )
    if spec.report.get("complexity"):
        notes.append(
            f"Counts of the {scale}-scale model: *params* all parameters, *weights* convolution weights only "
            "(the convention of the papers' parameter tables); MMACs = millions of multiply-accumulates of one "
            "forward pass at batch 1 (`torch.utils.flop_counter`, FLOPs / 2)."
        )
    if spec.report.get("paper_complexity"):
        pm = spec.paper_model
        notes.append(
            f"*At paper config*: the same model counted at the paper's configuration ({pm['num_classes']} classes, "
            f"{pm['input_size'][0]}x{pm['input_size'][1]} input, the paper-scale backbone) on the meta device, next "
            "to the paper's own figure (which it rounds or truncates to thousands)."
        )
    return [markdown(pd.DataFrame(rows)), "", " ".join(notes), ""]


def claims_table(results: list[CheckResult]) -> list[str]:
    if not results:
        return []
    rows = []
    for number, r in enumerate(results, start=1):
        if r.kind == "ordering":
            compared, paper = "rank of the variants with a paper value", "-"
            ours = "-" if math.isnan(r.delta) else f"rho {r.delta:.2f} ({r.n} seeds)"
            ci = "-" if math.isnan(r.ci_low) else f"[{r.ci_low:.2f}, {r.ci_high:.2f}] vs ≥ {r.min_rho:g}"
        else:
            if r.base_metric is not None:
                compared = (
                    f"{r.a} vs {r.b}: the gap in {metric_name(r.metric)} minus the gap in {metric_name(r.base_metric)}"
                )
            elif r.b_metric in (None, r.metric):
                compared = f"{r.a} vs {r.b}"
            else:
                compared = f"{r.a}: {metric_name(r.metric)} vs {metric_name(r.b_metric)}"
            paper = fmt(r.paper_delta, "+.1f")
            ours = "-" if r.n == 0 else f"{r.delta:+.2f} ± {fmt(r.delta_sd, '.2f')} (n={r.n})"
            ci = "-" if math.isnan(r.ci_low) else f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
            if r.expect == "similar":
                ci += f" vs ±{r.margin:g}"
        outcome = f"**{r.outcome}**" if r.holds else r.outcome
        if r.outcome == "undecided" and r.kind == "ordering":
            outcome += f" ({r.missing})" if r.missing else ""
        elif r.outcome == "undecided":
            outcome += f" ({seeds_phrase(r)})"
        elif r.outcome == "incomplete":
            outcome += f" ({r.missing})"
        elif r.outcome == NOT_TESTABLE:
            outcome = f"not testable at this scale ({r.untestable})"
        rows.append(
            {
                "id": check_id(number),
                "claim": f"{r.claim} *(ours: not counted in the verdict)*" if r.ours else r.claim,
                "compared": compared,
                "metric": metric_name(r.metric),
                "Δ paper": paper,
                "Δ ours": ours,
                f"{100 * CI_LEVEL:g}% CI": ci,
                "outcome": outcome,
            }
        )
    frame = pd.DataFrame(rows)
    table = frame.to_markdown(
        index=False, colalign=["left", "left", "left", "left", "right", "right", "right", "left"], disable_numparse=True
    )
    return [
        "## Claims",
        "",
        table,
        "",
        f"Δ = a - b in points; ours is the mean ± sd of the per-seed differences (n seeds) with its {100 * CI_LEVEL:g}% "
        "interval; for an ordering claim, Spearman's rho with its bootstrap interval.",
        "",
    ]


def backbone_table(table: Table) -> list[str]:
    """Backbones side by side, when the variants use more than one."""
    runs = table.runs
    if runs.empty:
        return []
    backbones = runs["record"].map(lambda r: r["config"]["model"].get("backbone"))
    if backbones.nunique() < 2:
        return []
    rows = []
    for name in dict.fromkeys(backbones):
        record = runs["record"][backbones == name].iloc[0]
        part = record["complexity"]["parts"].get("backbone", {})
        size = record["complexity"]["input_shape"]
        rows.append(
            {
                "backbone": f"`{name}`",
                "params": count(part.get("params")),
                f"MMACs ({size[2]}x{size[3]} image)": fmt(part["macs"] / 1e6 if part.get("macs") else None, ".1f"),
                "pretraining final loss": fmt((record.get("pretrained_backbone") or {}).get("final_loss"), ".4f"),
            }
        )
    return [
        "## Backbones",
        "",
        markdown(pd.DataFrame(rows)),
        "",
        "All parameters (BN included); MACs = multiply-accumulates of one forward pass at batch 1. The pretraining "
        "loss (dense cross-entropy with a 1x1 head on the pretraining split, last logged step) stands in for the "
        "paper's pretraining error.",
        "",
    ]


def region_tables(table: Table, summary: pd.DataFrame) -> list[str]:
    """Boundary band vs interior, and per-class IoU of the baseline and the headline variant."""
    runs = table.runs
    if runs.empty or "boundary_miou" not in runs["metrics"].iloc[0]:
        return []
    band = float(runs["metrics"].iloc[0].get("band_width_px", 0))
    spec = table.spec
    rows = []
    for v in spec.variants:
        b, i = values(table, v.name, "boundary_miou"), values(table, v.name, "interior_miou")
        if len(b):
            rows.append(
                {"variant": v.name, "boundary band mIoU": fmt(b.mean(), ".2f"), "interior mIoU": fmt(i.mean(), ".2f")}
            )
    lines = [
        "## Where the gain comes from",
        "",
        "mIoU (%) on the boundary band and on the interior, mean over seeds. The band is every labelled pixel whose "
        f"centre lies within {band:g} px (Euclidean) of a label change, a pixel edge between 4-neighbours with "
        "different labels (void and padding are no label: a void outline contributes its middle line, padding "
        "nothing); a pixel next to a straight change is 0.5 px from it. The width scales with the image side "
        "(`seg_core.metrics.band_width_for`). The interior is every other labelled pixel.",
        "",
        markdown(pd.DataFrame(rows)),
        "",
    ]
    names = runs["record"].iloc[0].get("class_names")
    if names:
        per = []
        for name in dict.fromkeys([spec.baseline, spec.headline or spec.variants[-1].name]):
            sub = runs[runs.variant == name]
            if sub.empty:
                continue
            mean = pd.DataFrame(
                [[math.nan if x is None else 100 * x for x in m["per_class_iou"]] for m in sub["metrics"]]
            ).mean()
            per.append({"variant": name, **{c: fmt(mean[k]) for k, c in enumerate(names)}})
        if per:
            lines += ["Per-class IoU (%), mean over seeds:", "", markdown(pd.DataFrame(per)), ""]
    return lines
