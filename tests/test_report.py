"""Report: statistics, verdicts (both outcomes), end to end from spec to pages, file-only reads."""

import json
import math
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import cli_args
from scipy import stats

from ablations.cli import main
from report import figures as report_figures
from report.checks import ORDERING_MIN_RHO, CheckResult, describe, judge_all, t_interval, table_verdict
from report.generate import generate
from report.generate import main as report_main
from report.load import ReportInputError
from report.tables import claims_table

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_end_to_end_spec_to_results_to_report(tiny):
    assert main(cli_args(tiny, "run", "tiny")) == 0  # default jobs: the process pool on 2 cores
    out = tiny["root"] / "report"
    written, _ = generate(tiny["specs"], tiny["results"], out)
    assert {p.name for p in written} == {
        "index.md",
        "how-to-read.md",
        "tiny.md",
        "tiny.png",
        "claims.png",
        "claims.csv",
        "tables.csv",
    }
    index = (out / "index.md").read_text()
    line = next(line for line in index.splitlines() if "[Tiny GCN sweep](tiny.md)" in line)
    assert "hold" in line and "runs" not in line  # the tally; all 6 runs done, so no runs note
    page = (out / "tiny.md").read_text()
    # a reader's order: verdict and claims, the figure, the table, the reading; the rules on one linked page
    order = ["## Verdict:", "## Claims", "![Tiny GCN sweep](figures/tiny.png)", "## Table", "## How these numbers"]
    assert [page.index(mark) for mark in order] == sorted(page.index(mark) for mark in order)
    assert "(how-to-read.md)" in page and "Student-t interval" not in page
    assert "Student-t interval" in (out / "how-to-read.md").read_text()
    for name, paper in (("baseline", "69.0"), ("k=3", "70.1"), ("k=5", "71.1")):
        row = next(line for line in page.splitlines() if line.startswith(f"| {name} "))
        assert paper in row and "(n=2)" in row
    assert (out / "figures" / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = {p: p.read_bytes() for p in written}
    generate(tiny["specs"], tiny["results"], out)
    assert {p: p.read_bytes() for p in written} == before  # deterministic


@pytest.mark.slow
def test_a_columns_figure_draws_each_variant_along_the_pages_columns(tiny, monkeypatch):
    """``report.plot = "columns"``: paper and ours along report.columns, one line per variant."""
    assert main(cli_args(tiny, "run", "tiny", "--seeds", "0", "1")) == 0
    text = tiny["spec"].read_text()
    text = text.replace(
        'x = "model.k"\nx_label = "k"', 'plot = "columns"\nx_label = "metric"\ncolumns = ["miou", "mean_acc"]'
    )
    text = text.replace("paper.miou = 70.1", "paper = { miou = 70.1, mean_acc = 80.0 }")
    tiny["spec"].write_text(text)
    figures = []
    monkeypatch.setattr(report_figures.plotting, "save", lambda fig, path: figures.append(fig))
    generate(tiny["specs"], tiny["results"], tiny["root"] / "report")
    fig, _claims = figures  # the page's figure, then the index's figure of every claim
    paper_ax, ours_ax = fig.axes[:2]
    assert [t.get_text() for t in ours_ax.get_xticklabels()] == ["mIoU", "mean acc."]
    drawn = {line.get_label(): len(line.get_xydata()) for line in paper_ax.get_lines()}
    assert drawn == {"baseline": 1, "k=3": 2, "k=5": 1}  # only k=3 has a paper mean_acc
    assert {t.get_text() for t in ours_ax.get_legend().get_texts()} == {"baseline", "k=3", "k=5"}
    tiny["spec"].write_text(text.replace('plot = "columns"', 'plot = "lines"'))
    _, errors = generate(tiny["specs"], tiny["results"], tiny["root"] / "report")
    assert any("report.plot" in str(e) and "'lines'" in str(e) for e in errors)


def test_report_without_results_says_not_run(tiny):
    generate(tiny["specs"], tiny["results"], tiny["root"] / "report")
    assert "not run yet" in (tiny["root"] / "report" / "index.md").read_text()


def test_blocked_spec_says_why_in_the_index_the_page_and_list(tiny, capsys):
    text = tiny["spec"].read_text()
    tiny["spec"].write_text('blocked = "the heads do not train (measured)"\n' + text)
    generate(tiny["specs"], tiny["results"], tiny["root"] / "report")
    index = (tiny["root"] / "report" / "index.md").read_text()
    page = (tiny["root"] / "report" / "tiny.md").read_text()
    row = next(line for line in index.splitlines() if "[Tiny GCN sweep](tiny.md)" in line)
    assert "**blocked**" in row and "the heads do not train (measured)" in row and "not run yet" not in index
    assert "## Verdict: blocked" in page
    assert main(cli_args(tiny, "list")) == 0
    assert "blocked: tiny: the heads do not train (measured)" in capsys.readouterr().err
    tiny["spec"].write_text("blocked = 1\n" + text)
    assert main(cli_args(tiny, "list")) == 2
    err = capsys.readouterr().err
    assert "tiny.toml" in err and "blocked" in err


@pytest.mark.slow
def test_report_reads_files_only():
    code = (
        "import sys, report.generate; loaded = {m for m in sys.modules if m.split('.')[0] in ('torch', 'seg_core', 'ablations')}; "
        "assert loaded <= {'ablations', 'ablations.schema', 'ablations.codehash', 'ablations.trunks'}, sorted(loaded)"
    )  # the stdlib schema, code hashes and trunk metadata, nothing that trains
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


@pytest.mark.slow
def test_committed_report_matches_committed_results(tmp_path):
    """report/ is what the generator makes of results/ (nothing hand-edited, nothing stale), and
    holds no page or figure the generator no longer makes (orphans are pruned when it runs)."""
    from report.generate import generated_files

    written, errors = generate(ROOT / "ablations" / "specs", ROOT / "results", tmp_path)
    assert not errors
    for page in sorted(tmp_path.glob("*.md")):
        assert page.read_text() == (ROOT / "report" / page.name).read_text(), page.name
    committed = {p.relative_to(ROOT / "report") for p in generated_files(ROOT / "report")}
    assert committed == {p.relative_to(tmp_path) for p in generated_files(tmp_path)}
    # the index opens with what reproduces per paper and the claims figure; its total is the lines' sum
    text = (tmp_path / "index.md").read_text()
    head = text.split("\n## ")[1]
    assert head.startswith("What reproduces") and "figures/claims.png" in head
    assert (tmp_path / "figures" / "claims.png").stat().st_size > 10_000
    total = int(next(line for line in head.splitlines() if line.startswith("| **all**")).split("|")[3])
    listed = re.findall(r"\| \d+/(\d+) hold", text.split("## Beyond")[0])
    assert total == sum(map(int, listed)) > 0


def test_the_generator_prunes_pages_and_figures_it_no_longer_makes(tmp_path):
    from report.generate import generate as regenerate

    (tmp_path / "figures").mkdir()
    orphans = [tmp_path / "old-table.md", tmp_path / "figures" / "old-table.png"]
    for path in orphans:
        path.write_text("stale")
    keep = tmp_path / "notes.txt"
    keep.write_text("not a generated kind")
    (tmp_path / "results").mkdir()
    regenerate(ROOT / "ablations" / "specs", tmp_path / "results", tmp_path)  # no results: quick, few files
    assert not any(p.exists() for p in orphans) and keep.exists() and (tmp_path / "index.md").exists()


def test_model_info_columns_say_whose_configuration_they_show():
    """A ``paper_`` key of report.model_info is the paper's configuration, the others this scale's:
    the committed DeepLab page (equal to the generator's output, above) heads them so."""
    header = next(
        line
        for line in (ROOT / "report" / "deeplab-fov.md").read_text().splitlines()
        if line.startswith("| variant ") and "rates" in line
    )
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert {"rates (paper)", "rates (mini)", "width (mini)"} <= set(columns)
    assert not any(c.startswith("paper ") and c.endswith("(mini)") for c in columns), columns


def test_committed_results_are_complete_and_current():
    """Every spec's mini-scale runs exist for its current configs, none failed, none is stale, and
    all were produced by the current code; every timing spec's items are measured on CPU."""
    from ablations.schema import load_specs
    from report.load import load_table
    from report.timing import load_measurements

    specs, errors = load_specs(ROOT / "ablations" / "specs")
    assert not errors
    measured, _ = load_measurements(ROOT / "results" / "benchmarks" / "timing-cpu.json")
    for spec in specs:
        if spec.kind == "timing":
            assert all((spec.id, item.name) in measured for item in spec.items), spec.id
            continue
        table = load_table(spec, ROOT / "results", "mini", root=ROOT)
        if spec.blocked:  # said so on every page; nothing committed that contradicts it
            assert table.runs.empty and not (ROOT / "results" / spec.id / "mini").exists(), spec.id
            continue
        assert len(table.runs) == table.expected and not table.missing and not table.failed, spec.id
        assert not table.stale, (spec.id, table.stale)
        assert not table.changed_code, (spec.id, table.changed_code)


# ------------------------------------------------------------------ claims (report.checks)
def _check_spec(expect="greater", metric="miou", margin=None):
    check = {"claim": "a beats b", "a": "a", "b": "b", "metric": metric, "expect": expect}
    if margin is not None:
        check["margin"] = margin
    return {
        "metric": "miou",
        "baseline": "b",
        "variants": [
            {"name": "b", "paper": {"miou": 69.0, "interior_pixel_acc": 93.9}},
            {"name": "a", "paper": {"miou": 70.0, "interior_pixel_acc": 94.0}},
        ],
        "report": {"checks": [check]},
    }


def _metrics_df(values, metric="miou"):
    rows = [
        {"variant": v, "seed": s, "metrics": {metric: x / 100}} for v, xs in values.items() for s, x in enumerate(xs)
    ]
    return pd.DataFrame(rows)


B = [30.0, 30.1, 29.9]


def _judge(spec, df):
    return judge_all(spec["report"]["checks"], spec["metric"], {v["name"]: v["paper"] for v in spec["variants"]}, df)


@pytest.mark.parametrize(
    "expect,diffs,margin,outcome",
    [
        ("greater", [1.0, 1.1, 0.9], None, "holds"),  # CI [+0.75, +1.25]
        ("greater", [0.5, -0.2, 0.3], None, "undecided"),  # CI straddles zero
        ("greater", [-1.0, -1.1, -0.9], None, "reversed"),
        ("less", [-1.0, -1.1, -0.9], None, "holds"),
        ("less", [1.0, 1.1, 0.9], None, "reversed"),
        ("similar", [0.1, -0.1, 0.0], 1.0, "holds"),  # CI [-0.25, +0.25] inside +-1
        ("similar", [2.0, 2.1, 1.9], 1.0, "differs"),  # CI [+1.75, +2.25] wholly outside +-1
        ("similar", [0.5, 1.5, 0.9], 1.0, "undecided"),  # CI crosses the margin
        ("similar", [0.5, 0.6, 0.4], 0.1, "differs"),  # a tight interval, but beyond a tight margin
        ("similar", [0.2, 0.3, 0.1], 0.1, "undecided"),  # CI [-0.05, +0.45]: inside and beyond 0.1
    ],
)
def test_claim_outcomes_on_constructed_seed_sets(expect, diffs, margin, outcome):
    spec = _check_spec(expect, margin=margin)
    (r,) = _judge(spec, _metrics_df({"b": B, "a": [b + d for b, d in zip(B, diffs)]}))
    assert r.outcome == outcome
    assert r.paper_delta == pytest.approx(1.0) and r.n == 3
    assert r.delta == pytest.approx(sum(diffs) / 3)
    assert r.ci_low < r.delta < r.ci_high or r.ci_low == r.ci_high


def test_a_base_metric_judges_how_the_lead_changes_between_two_metrics():
    """``base_metric``: per seed, (a - b in metric) - (a - b in base_metric). Here a leads by 5 at
    the base metric and by 2 at the other on every seed: a "the lead grows" claim is reversed
    (-3), although a is ahead on both metrics."""
    rows = [
        {
            "variant": v,
            "seed": s,
            "metrics": {"crop0_miou": (b + lead0) / 100, "crop400_miou": (b - 10 + lead400) / 100},
        }
        for s, b in enumerate(B)
        for v, lead0, lead400 in (("b", 0.0, 0.0), ("a", 5.0 + 0.1 * s, 2.0))
    ]
    spec = _check_spec(metric="crop400_miou")
    spec["report"]["checks"][0]["base_metric"] = "crop0_miou"
    spec["variants"] = [
        {"name": "b", "paper": {"crop0_miou": 78.8, "crop400_miou": 63.6}},
        {"name": "a", "paper": {"crop0_miou": 80.9, "crop400_miou": 69.2}},
    ]
    (r,) = _judge(spec, pd.DataFrame(rows))
    assert r.delta == pytest.approx(-3.1) and r.n == 3
    assert r.outcome == "reversed"
    assert r.paper_delta == pytest.approx((69.2 - 63.6) - (80.9 - 78.8))
    assert "mIoU, crop 400 gap minus mIoU, crop 0 gap -3.10 points" in describe(r)
    table = "\n".join(claims_table([r]))
    assert "the gap in" in table and "minus the gap in" in table


def test_t_interval_matches_the_textbook():
    mean, sd, low, high = t_interval(pd.Series([1.0, 2.0, 3.0]))
    assert (mean, sd) == (2.0, 1.0)
    assert (low, high) == pytest.approx((2 - 4.302653 / 3**0.5, 2 + 4.302653 / 3**0.5), abs=1e-5)  # t(0.975, 2)


def test_undecided_claims_say_how_many_seeds_would_decide_them():
    diffs = [0.5, -0.2, 0.3]
    (r,) = _judge(_check_spec(), _metrics_df({"b": B, "a": [b + d for b, d in zip(B, diffs)]}))
    n, sd, mean = r.seeds_to_decide, r.delta_sd, r.delta

    def half(m):
        return stats.t.ppf(0.975, m - 1) * sd / m**0.5

    assert n > 3 and half(n) < abs(mean) <= half(n - 1)  # the first n whose interval would clear zero
    assert f"about {n} seeds" in describe(r)
    (hopeless,) = _judge(_check_spec(), _metrics_df({"b": B, "a": [b + d for b, d in zip(B, [3.0, -3.0, 0.01])]}))
    assert hopeless.outcome == "undecided" and hopeless.seeds_to_decide is None
    assert "more than 100 seeds" in describe(hopeless)
    assert "vs paper" in describe(r) and "nan" not in describe(r)
    qualitative = replace(r, paper_delta=math.nan)  # a claim the paper makes without a number
    assert "vs paper" not in describe(qualitative) and "nan" not in describe(qualitative)


def test_missing_data_is_incomplete_not_a_verdict():
    spec = _check_spec()
    (r,) = _judge(spec, _metrics_df({"b": B}))
    assert r.outcome == "incomplete" and r.missing == "a not run"
    (r,) = _judge(spec, _metrics_df({"b": B[:1], "a": [31.0]}))
    assert r.outcome == "incomplete" and "2 needed" in r.missing
    assert table_verdict([r]).label == "incomplete" and "nan" not in table_verdict([r]).sentence


def test_ordering_claims_are_judged_on_a_bootstrap_interval_against_one_bar():
    spec = {
        "metric": "miou",
        "variants": [{"name": n, "paper": {"miou": p}} for n, p in (("x", 1), ("y", 2), ("z", 3), ("w", 4))],
        "report": {"checks": [{"claim": "ranks", "kind": "ordering", "metric": "miou"}]},
    }
    seeds3 = lambda *means: _metrics_df({n: [m - 0.5, m, m + 0.5] for n, m in zip("xyzw", means)})  # noqa: E731
    (r,) = _judge(spec, seeds3(10, 20, 30, 40))  # the paper's order whatever the resample
    assert r.outcome == "holds" and r.delta == pytest.approx(1.0) and r.ci_low == pytest.approx(1.0)
    assert r.min_rho == ORDERING_MIN_RHO and r.n == 3
    (r,) = _judge(spec, seeds3(40, 30, 20, 10))
    assert r.outcome == "reversed" and r.ci_high == pytest.approx(-1.0)
    (r,) = _judge(spec, seeds3(10, 40, 30, 20))  # ranks 1,4,3,2 vs 1,2,3,4: rho 0.2 in every resample
    assert r.outcome == "differs" and r.delta == pytest.approx(0.2) and r.ci_high < ORDERING_MIN_RHO
    # near-ties that the seeds swap: the point estimate clears the bar, the interval does not
    noisy = _metrics_df({"x": [10, 25, 12], "y": [20, 11, 21], "z": [15, 28, 30], "w": [30, 12, 35]})
    (r,) = _judge(spec, noisy)
    assert r.delta >= ORDERING_MIN_RHO and r.ci_low < ORDERING_MIN_RHO <= r.ci_high and r.outcome == "undecided"
    assert _judge(spec, noisy)[0].ci_low == r.ci_low  # a fixed generator: the report is deterministic
    # every variant tied (collapsed models): rho is undefined, which is no information, not a verdict
    (r,) = _judge(spec, _metrics_df({n: [16.31, 16.31] for n in "xyzw"}))
    assert r.outcome == "undecided" and "tie" in r.missing and "nan" not in describe(r)
    (r,) = _judge(spec, _metrics_df({"x": [10, 11], "y": [20, 21], "z": [30, 31]}))
    assert r.outcome == "incomplete" and r.missing == "1 of 4 variants not run"


def _result(outcome):
    return CheckResult(
        claim="c",
        kind="pairwise",
        a="a",
        b="b",
        metric="miou",
        expect="greater",
        paper_delta=1.0,
        delta=0.5,
        delta_sd=0.1,
        n=3,
        ci_low=0.1,
        ci_high=0.9,
        outcome=outcome,
    )


@pytest.mark.parametrize(
    "outcomes,label",
    [
        (["holds", "holds"], "reproduced"),
        (["holds", "undecided"], "partially reproduced"),
        (["holds", "reversed"], "partially reproduced"),
        (["reversed", "undecided"], "not reproduced"),
        (["differs"], "not reproduced"),
        (["undecided", "undecided"], "undecided"),
    ],
)
def test_table_verdict_labels(outcomes, label):
    assert table_verdict([_result(o) for o in outcomes]).label == label


def test_our_own_questions_are_described_but_never_change_the_papers_verdict():
    paper = [_result("holds"), _result("holds")]
    ours = replace(_result("reversed"), claim="our question", ours=True)
    verdict = table_verdict([*paper, ours])
    assert verdict.label == "reproduced" and verdict.sentence.startswith("reproduced: all 2 claims hold")
    assert "Beyond the paper (not counted): our question: reversed" in verdict.sentence
    assert table_verdict([_result("undecided"), replace(ours, outcome="holds")]).label == "undecided"
    (row,) = [line for line in "\n".join(claims_table([ours])).splitlines() if "| our question" in line]
    assert "*(ours: not counted in the verdict)*" in row


CLAIMS_SPEC = """
id = "tiny-claims"
title = "Tiny claims"
source = "test fixture"
paper_table = "Large Kernel Matters, Tables 2 and 6"
paper_dataset = "PASCAL VOC 2012 val"
claim = "GCN + BR beats the 1x1 head; the GCN backbone is no worse"
metric = "miou"
baseline = "baseline"

[paper_model]
num_classes = 21
input_size = [64, 64]
model = { backbone = "resnet50", backbone_options = {} }

[report]
columns = ["boundary_pixel_acc", "miou"]
complexity = ["head.weights", "backbone.params"]
paper_complexity = ["head.weights"]

[[report.checks]]
claim = "GCN + BR beats the 1x1 head"
a = "GCN + BR"
b = "baseline"

[[report.checks]]
claim = "the backbones are similar"
a = "GCN backbone"
b = "baseline"
expect = "similar"
margin = 1.0
metric = "boundary_pixel_acc"

[defaults.model]
name = "single_head"

[scales.mini]
seeds = [0, 1]

[scales.mini.model]
backbone = "mini_resnet"
backbone_options = { stem_width = 8, widths = [8, 16, 16], strides = [1, 2, 2] }

[scales.mini.data]
name = "shapes"
size = 32
radius_min = 3.0
radius_max = 12.0
train_images = 32
val_images = 16

[scales.mini.pretrain]
images = 32
steps = 2
batch_size = 8
lr = 0.05

[scales.mini.train]
steps = 3
batch_size = 8
lr = 0.01
freeze_backbone = true

[[variants]]
name = "baseline"
model.head = "pointwise"
paper = { miou = 65.7, boundary_pixel_acc = 71.3, head_weights = 43000 }

[[variants]]
name = "GCN + BR"
model = { head = "gcn_br", k = 5 }
paper = { miou = 72.3, boundary_pixel_acc = 73.4 }

[[variants]]
name = "GCN backbone"
model = { head = "pointwise", backbone = "mini_resnet_gcn" }
paper = { miou = 71.2, boundary_pixel_acc = 71.5 }
"""


@pytest.mark.slow
def test_end_to_end_claims_backbones_and_paper_config_counts(tiny):
    (tiny["specs"] / "tiny-claims.toml").write_text(CLAIMS_SPEC)
    assert main(cli_args(tiny, "run", "tiny-claims", "--jobs", "1")) == 0
    records = [json.loads(p.read_text()) for p in (tiny["results"] / "tiny-claims" / "mini").glob("*.json")]
    assert len(records) == 6
    for r in records:
        c = r["complexity"]
        backbone, head = c["parts"]["backbone"], c["parts"]["head"]
        assert backbone["params"] + head["params"] == c["total"]["params"] > 0
        assert backbone["macs"] + head["macs"] == c["total"]["macs"] > 0
    paper = json.loads((tiny["results"] / "tiny-claims" / "paper_model.json").read_text())["variants"]
    assert {name: v["parts"]["head"]["weights"] for name, v in paper.items()} == {
        "baseline": 2048 * 21,
        "GCN backbone": 2048 * 21,
        "GCN + BR": 2 * 5 * 21 * (2048 + 21) + 2 * 9 * 21 * 21,
    }
    out = tiny["root"] / "report"
    written, _ = generate(tiny["specs"], tiny["results"], out)
    assert out / "figures" / "tiny-claims.png" in written
    page = (out / "tiny-claims.md").read_text()
    assert "## Claims" in page and "| GCN + BR beats the 1x1 head " in page and "## Backbones" in page
    assert "`mini_resnet_gcn`" in page and "pretraining final loss" in page
    assert "paper boundary-band acc. (%)" in page and "ours boundary-band acc. (%)" in page
    baseline_row = next(line for line in page.splitlines() if line.startswith("| baseline "))
    assert "43K" in baseline_row and "43,008" in baseline_row
    label = page.split("## Verdict: ", 1)[1].split("\n", 1)[0]
    # at 32 px the scaled band (7 px at 512 -> 0.44 px) reaches no pixel centre: no band metric, said so
    assert label == "incomplete" and "no boundary_pixel_acc value for GCN backbone and baseline" in page


# ------------------------------------------------------------------ timing specs
TIMING_SPEC = """
kind = "timing"
id = "tiny-timing"
title = "Tiny timing"
source = "test fixture"
paper_table = "Some paper, Table 2 (time)"
paper_hardware = "a GPU"
num_classes = 5
claim = "the small model is 5x faster"
reference = "big"
compare = "speedup"
agree_factor = 1.25

[defaults]
input_size = [64, 64]

[[items]]
name = "big"
model = { name = "pspnet50" }
memory = true
paper = { ms = 170, mem_gb = 9.2 }

[[items]]
name = "small"
model = { name = "icnet" }
memory = true
paper = { ms = 33, mem_gb = 1.6 }

[[items]]
name = "stage a @ full"
model = { name = "pspnet50" }
stage = "res4"
group = "full"
paper = { ratio = 4.0 }
"""


def _bench(spec, item, seconds, gmac, **info):
    return {
        "name": item,
        "stats": {"median": seconds, "rounds": 3},
        "extra_info": {"measures": [[spec, item]], "gmac": gmac, "device": "cpu", "threads": 2, **info},
    }


def calibrated(gflops: float) -> dict:
    return {"calibration_gflops": gflops, "calibration": "fp32 matmul 512x512, 2 threads"}


def test_timing_spec_page_puts_our_ratios_beside_the_papers(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tiny-timing.toml").write_text(TIMING_SPEC)
    results = tmp_path / "results"
    (results / "benchmarks").mkdir(parents=True)
    benches = [
        _bench("tiny-timing", "big", 10.0, 370, peak_memory_mb=2000.0, **calibrated(91.6)),
        _bench("tiny-timing", "small", 2.0, 29, peak_memory_mb=300.0, **calibrated(91.6)),
        _bench("tiny-timing", "stage a @ full", 1.0, 10, **calibrated(88.0)),
    ]
    (results / "benchmarks" / "timing-cpu.json").write_text(json.dumps({"benchmarks": benches, "machine_info": {}}))
    written, errors = generate(specs, results, tmp_path / "report")
    assert not errors and {p.name for p in written} == {
        "index.md",
        "how-to-read.md",
        "tiny-timing.md",
        "tiny-timing.png",
        "claims.png",
        "claims.csv",
        "tables.csv",
    }
    page = (tmp_path / "report" / "tiny-timing.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| small "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:8] == ["33", "2000", "5.15", "5.00", "5.00-5.00", "12.76", "29.0"] and "agrees" in cells
    assert "300" in cells and "1.6" in cells  # memory: ours vs the paper's
    assert (
        "**Calibration:** 88-91.6 GFLOP/s (fp32 matmul 512x512, 2 threads), measured by the benchmark session itself."
        in page
    )
    index = (tmp_path / "report" / "index.md").read_text()
    # stage a: 10x against the paper's 4x, faster than claimed, which a one-sided speedup accepts
    assert "2 of 2 speedups agree" in index and "small: ours 5.00x" not in index  # details: the page
    (results / "benchmarks" / "timing-cpu.json").write_text("{not json")
    with pytest.raises(ReportInputError, match="timing-cpu.json"):
        generate(specs, results, tmp_path / "report")


def test_timing_ratios_are_judged_on_their_range_over_rounds():
    """Issue 30: a speedup is one-sided (faster than claimed agrees), a ratio two-sided, and a
    range over rounds that straddles a bound is unstable, not a verdict that flips between runs."""
    from report.timing import _agreement

    assert _agreement(17.1, 20.2, 9.44, 1.25, one_sided=True) == "agrees"  # ICNet sub4: 20x vs the paper's 9.4x
    assert _agreement(17.1, 20.2, 9.44, 1.25, one_sided=False) == "differs"  # the same as a two-sided ratio
    assert _agreement(1.50, 1.70, 2.0, 1.25, one_sided=True) == "unstable"  # straddles 2.0 / 1.25 = 1.6
    assert _agreement(1.20, 1.50, 2.0, 1.25, one_sided=True) == "differs"
    assert _agreement(0.85, 1.15, 1.0, 1.25, one_sided=False) == "agrees"
    assert _agreement(1.10, 1.40, 1.0, 1.25, one_sided=False) == "unstable"
    from report.timing import rows

    spec = SimpleNamespace(
        id="t",
        compare="speedup",
        agree_factor=1.25,
        reference="big",
        items=[
            SimpleNamespace(name="big", paper={"ms": 100.0}, group=None, memory=False),
            SimpleNamespace(name="small", paper={"ms": 50.0}, group=None, memory=False),
        ],
    )
    measured = {
        ("t", "big"): {"ms": 100.0, "ms_min": 95.0, "ms_max": 130.0},
        ("t", "small"): {"ms": 60.0, "ms_min": 55.0, "ms_max": 70.0},
    }
    small = rows(spec, measured).iloc[1]  # ours 1.67x, rounds 95/70 = 1.36x to 130/55 = 2.36x, bound 2 / 1.25
    assert small.ratio_low == pytest.approx(95 / 70) and small.ratio_high == pytest.approx(130 / 55)
    assert small.agreement == "unstable"


def test_a_timing_page_without_paper_figures_is_measured_not_incomplete():
    from types import SimpleNamespace

    from report.timing import verdict

    spec = SimpleNamespace(compare="speedup", agree_factor=1.25)
    table = pd.DataFrame(
        {"item": ["a", "b"], "measured": [True, True], "agreement": ["reference", "-"], "paper_ratio": [1.0, math.nan]}
    )
    assert verdict(spec, table)[0] == "measured"  # the paper gives no figure: nothing is missing
    with_figure = table.assign(paper_ratio=[1.0, 2.0], measured=[True, False])
    assert verdict(spec, with_figure)[0] == "incomplete"  # a figure to judge against, not measured yet
    assert verdict(spec, table.assign(measured=[False, False]))[0] == "no results"


def test_holdout_split_is_held_out_of_training_and_can_be_judged_on(tiny):
    """Runs evaluate on the images after their training images in the train stream (never trained
    on) as well as on val; the side report judges on those, and refuses to overwrite report/."""
    import re

    from seg_core.data import take
    from seg_core.registry import DATASETS

    text = tiny["spec"].read_text().replace("val_images = 16", "val_images = 16\nholdout_images = 8")
    tiny["spec"].write_text(text)
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--seeds", "0", "--variant", "baseline")) == 0
    (path,) = (tiny["results"] / "tiny" / "mini").glob("*.json")
    record = json.loads(path.read_text())
    assert record["holdout_metrics"]["miou"] != record["metrics"]["miou"]
    stream = DATASETS.build("shapes", split="train", num_images=56, size=32, radius_min=3.0, radius_max=12.0)
    train, holdout = take(stream, 0, 48), take(stream, 48, 56)
    assert len(holdout) == 8 and not any(torch.equal(h, t) for h in holdout.images for t in train.images)
    out = tiny["root"] / "side"
    generate(tiny["specs"], tiny["results"], out, split="holdout")
    page = (out / "tiny.md").read_text()
    assert "Judged on the holdout split" in page
    row = next(line for line in page.splitlines() if line.startswith("| baseline "))
    assert re.search(rf"{100 * record['holdout_metrics']['miou']:.2f}", row)
    with pytest.raises(SystemExit):
        report_main(["--split", "holdout"])


# ------------------------------------------------------ readings state only judged effects
def test_a_reading_cites_a_check_for_every_effect_it_states():
    """The rule (issue 27): a sentence of a reading that states an effect (a signed number) cites
    the page's claim that judged it ([C2]) or says it was not tested; a cited id must exist."""
    from report.checks import uncited_effects

    text = (
        "The decoder gains +1.1 on the band [C2]. Two convolutions beat one by +0.6 (not tested). "
        "It loses -0.8 overall. The paper's +1.6 is [C1, C3]. A missing claim [C5]. "
        "Judged elsewhere, +1.09 [icnet-cff-seeds C1]. Not there, -0.2 [icnet-cff-seeds C2]."
    )
    assert uncited_effects(text, 4, {"icnet-cff-seeds": 1}) == [
        "It loses -0.8 overall.",
        "A missing claim [C5].",
        "Not there, -0.2 [icnet-cff-seeds C2].",
    ]
    assert uncited_effects("Maps of 8x8 cells, 1-2 px lines, 1,000 steps.", 0) == []


def test_every_committed_reading_follows_the_rule():
    from ablations.schema import load_specs
    from report.checks import uncited_effects

    specs, errors = load_specs(ROOT / "ablations" / "specs")
    assert not errors
    claims = {spec.id: len(spec.report.get("checks", [])) for spec in specs}
    offending = {
        spec.id: bad
        for spec in specs
        if (bad := uncited_effects(spec.report.get("discussion", ""), claims[spec.id], claims))
    }
    assert not offending, offending


def test_the_index_tallies_paper_claims_by_outcome():
    """The index's summary counts each table's paper claims by outcome (our own questions excluded)."""
    from report.checks import CheckResult
    from report.pages import _tally, _tally_phrase

    def result(outcome, ours=False):
        return CheckResult(claim="c", kind="pairwise", metric="miou", expect="greater", outcome=outcome, ours=ours)

    tally = _tally([result("holds"), result("undecided"), result("reversed"), result("holds", ours=True)])
    assert tally == {
        "claims": 3,
        "holds": 1,
        "undecided": 1,
        "reversed": 1,
        "differs": 0,
        "not testable": 0,
        "incomplete": 0,
    }
    assert _tally_phrase(tally) == "1/3 hold, 1 undecided, 1 reversed"


def test_claims_and_tables_exports_agree_with_the_pages():
    """report/claims.csv and report/tables.csv re-derived from the committed pages: every claim
    row's outcome and effect is the page's, and every variant's mean is the page's table's."""
    report = ROOT / "report"
    claims = pd.read_csv(report / "claims.csv", keep_default_na=False, na_values=[""])
    tables = pd.read_csv(report / "tables.csv", keep_default_na=False, na_values=[""])
    assert len(claims) and len(tables)
    page = lambda table, scale: (report / (f"{table}.md" if scale == "mini" else f"{table}-{scale}.md")).read_text()  # noqa: E731
    for row in claims.itertuples():
        line = next(x for x in page(row.table, row.scale).splitlines() if x.startswith(f"| {row.claim_id} "))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert row.claim in cells[1] and cells[7].strip("*").startswith(row.outcome), (row.table, row.claim_id)
        if not math.isnan(row.our_effect):
            shown = float(re.search(r"[+-]?\d+\.\d+", cells[5]).group())
            assert abs(shown - row.our_effect) <= 0.0051, (row.table, row.claim_id, shown, row.our_effect)
    index = (report / "index.md").read_text()
    for paper, group in claims[claims.follows_up.isna() & ~claims.ours_beyond_paper].groupby("paper"):
        line = next(x for x in index.splitlines() if x.startswith(f"| {paper} "))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert int(cells[2]) == len(group) and int(cells[3]) == (group.outcome == "holds").sum(), paper
    for (table, scale, variant), group in tables.groupby(["table", "scale", "variant"], sort=False):
        first = group.iloc[0]  # the table's own metric comes first
        if first.n_seeds == 0:
            continue
        line = next(x for x in page(table, scale).splitlines() if x.startswith(f"| {variant} "))
        shown = [float(x) for x in re.findall(r"(\d+\.\d+) ± ", line)]
        assert any(abs(x - first.our_mean) <= 0.0051 for x in shown), (table, variant, first.our_mean, line)


def test_the_index_is_short_cells_and_every_accuracy_table_in_one_paper_section():
    """Issue 30: no index cell longer than 30 words (link targets aside), and every accuracy
    table of the committed report under exactly one paper's heading."""
    from report.pages import INDEX_CELL_WORDS

    index = (ROOT / "report" / "index.md").read_text()
    cells = [c for line in index.splitlines() if line.startswith("|") for c in line.strip("|").split(" | ")]
    words = lambda cell: len(re.sub(r"\]\([^)]*\)", "]", cell).split())  # noqa: E731
    assert cells and max(map(words, cells)) <= INDEX_CELL_WORDS, max(cells, key=words)
    sections = {s.split("\n", 1)[0]: s for s in re.split(r"^## ", index, flags=re.M)[1:]}
    column = lambda section, i: [  # noqa: E731
        line.strip("|").split(" | ")[i].strip() for line in section.splitlines() if line.startswith("| [")
    ]
    papers = {name: s for name, s in sections.items() if name not in ("What reproduces", "Beyond the papers")}
    checked = 0
    for page in sorted((ROOT / "report").glob("*.md")):
        if "## Claims\n\n|" not in page.read_text():  # accuracy tables have a claims table
            continue
        homes = [name for name, s in papers.items() if any(c.endswith(f"]({page.name})") for c in column(s, 0))]
        homes += ["beyond"] * sum(c.endswith(f"]({page.name})") for c in column(sections["Beyond the papers"], 1))
        assert len(homes) == 1, (page.name, homes)
        checked += 1
    assert checked >= 21


def test_every_metric_the_specs_use_has_a_readers_name():
    """Pages, figures and verdicts print names, not record keys (issue 30: no `crop400_miou` or
    `bf_3px` in prose, ticks or titles)."""
    from ablations.schema import load_specs
    from report.names import metric_name

    specs, errors = load_specs(ROOT / "ablations" / "specs")
    assert not errors
    used = set()
    for spec in (s for s in specs if s.kind != "timing"):
        used |= {spec.metric, *spec.report.get("columns", [])}
        for check in spec.report.get("checks", []):
            used |= {check[k] for k in ("metric", "b_metric", "base_metric") if k in check}
    assert len(used) > 10 and not [m for m in sorted(used) if "_" in metric_name(m)]
    assert metric_name("bf_3px") == "boundary F at 3 px" and metric_name("raw_miou") == "mIoU before post-processing"


def test_a_timing_figure_stacks_stages_of_one_model_and_never_stacks_alternatives(tmp_path, monkeypatch):
    """Issue 30 (7): stages of one model stack (parts of a whole), with the paper's figure beside
    ours; whole models in one group (alternatives) are drawn side by side, never stacked."""
    from ablations.schema import load_spec
    from report import timing

    path = tmp_path / "tiny-timing.toml"
    path.write_text(TIMING_SPEC.replace('stage = "res4"\ngroup = "full"', 'stage = "res4"\ngroup = "full"\n'))
    spec = load_spec(path)
    measured = {
        ("tiny-timing", n): {"ms": ms, "ms_min": ms, "ms_max": ms}
        for n, ms in [("big", 10.0), ("stage a @ full", 20.0)]
    }
    drawn = []
    monkeypatch.setattr(timing, "_alternatives_figure", lambda *a: drawn.append("side by side") or True)
    texts = []
    import matplotlib.axes

    real_text = matplotlib.axes.Axes.text
    monkeypatch.setattr(
        matplotlib.axes.Axes, "text", lambda self, *a, **k: texts.append(a[2]) or real_text(self, *a, **k)
    )
    assert timing.figure(spec, timing.rows(spec, measured), tmp_path / "stages.png") and not drawn
    assert any("stage a: 4x faster than big in the paper; ours 0.5" in t for t in texts), texts
    alternatives = (
        path.read_text().replace('stage = "res4"\n', "").replace('name = "small"', 'name = "small"\ngroup = "full"')
    )
    path.write_text(alternatives)
    spec = load_spec(path)
    measured[("tiny-timing", "small")] = {"ms": 2.0, "ms_min": 2.0, "ms_max": 2.0}
    assert timing.figure(spec, timing.rows(spec, measured), tmp_path / "alternatives.png") and drawn == ["side by side"]
