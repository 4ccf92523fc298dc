"""Report: statistics, verdicts (both outcomes), end to end from spec to pages, file-only reads."""

import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from conftest import cli_args

from ablations.cli import main
from report.checks import judge_all
from report.generate import generate, summarise, verdict
from report.stats import ranks, spearman

ROOT = Path(__file__).resolve().parent.parent


def test_ranks_and_spearman():
    assert ranks([10, 20, 20, 5]) == [2, 3.5, 3.5, 1]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def _spec():
    return {"metric": "miou", "baseline": "b", "headline": "h",
            "variants": [{"name": "b", "paper": {"miou": 69.0}}, {"name": "m", "paper": {"miou": 71.0}},
                         {"name": "h", "paper": {"miou": 74.5}}]}


def _df(values):
    rows = [{"variant": v, "seed": s, "value": x, "boundary_miou": math.nan, "interior_miou": math.nan,
             "head_weights": 1, "macs_head": 1, "x": None}
            for v, xs in values.items() for s, x in enumerate(xs)]
    return pd.DataFrame(rows)


def test_verdict_reproduced():
    s = summarise(_spec(), _df({"b": [30.0, 30.2, 30.1], "m": [31.0, 31.1, 30.9], "h": [33.0, 33.1, 32.9]}))
    v = verdict(_spec(), s)
    assert v.label == "reproduced"
    assert s.set_index("variant").loc["h", "delta"] == pytest.approx(2.9)


def test_verdict_not_reproduced_when_delta_is_within_noise():
    v = verdict(_spec(), summarise(_spec(), _df({"b": [30.0, 31.0, 29.0], "m": [30.5, 30.0, 31.0], "h": [30.4, 31.5, 29.6]})))
    assert v.label == "not reproduced" and "within seed noise" in v.sentence


def test_verdict_partial_when_ordering_differs():
    v = verdict(_spec(), summarise(_spec(), _df({"b": [30.0, 30.1], "m": [35.0, 35.1], "h": [33.0, 33.1]})))
    assert v.label == "partially reproduced"


def test_verdict_needs_two_seeds():
    assert verdict(_spec(), summarise(_spec(), _df({"b": [30.0], "m": [31.0], "h": [33.0]}))).label == "not enough seeds"


def test_end_to_end_spec_to_results_to_report(tiny):
    assert main(cli_args(tiny, "run", "tiny")) == 0  # default jobs: the process pool on 2 cores
    out = tiny["root"] / "report"
    written = generate(tiny["specs"], tiny["results"], out)
    assert {p.name for p in written} == {"index.md", "tiny.md", "tiny.png"}
    index = (out / "index.md").read_text()
    assert "[Tiny GCN sweep](tiny.md)" in index and "6/6" in index
    page = (out / "tiny.md").read_text()
    assert "## Verdict:" in page and "Spearman" in page and "![Tiny GCN sweep](figures/tiny.png)" in page
    for name, paper in (("baseline", "69.0"), ("k=3", "70.1"), ("k=5", "71.1")):
        row = next(line for line in page.splitlines() if line.startswith(f"| {name} "))
        assert paper in row and "(n=2)" in row
    assert (out / "figures" / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = {p: p.read_bytes() for p in written}
    generate(tiny["specs"], tiny["results"], out)
    assert {p: p.read_bytes() for p in written} == before  # deterministic


def test_report_without_results_says_not_run(tiny):
    generate(tiny["specs"], tiny["results"], tiny["root"] / "report")
    assert "not run yet" in (tiny["root"] / "report" / "index.md").read_text()


def test_report_reads_files_only():
    code = "import sys, report.generate; assert not {'torch', 'seg_core', 'ablations'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_committed_report_matches_committed_results(tmp_path):
    """report/ is what the generator makes of results/ (nothing hand-edited, nothing stale)."""
    generate(ROOT / "ablations" / "specs", ROOT / "results", tmp_path)
    for page in sorted(tmp_path.glob("*.md")):
        assert page.read_text() == (ROOT / "report" / page.name).read_text(), page.name


def test_committed_results_are_complete_for_the_mini_scale():
    for spec_path in sorted((ROOT / "ablations" / "specs").glob("*.toml")):
        spec = tomllib.loads(spec_path.read_text())
        files = list((ROOT / "results" / spec["id"] / "mini").glob("*.json"))
        assert len(files) == len(spec["variants"]) * len(spec["scales"]["mini"]["seeds"]), spec["id"]


# ------------------------------------------------------------------ claims (report.checks)
def _check_spec(expect="greater", metric="miou"):
    return {"metric": "miou", "baseline": "b",
            "variants": [{"name": "b", "paper": {"miou": 69.0, "interior_pixel_acc": 93.9}},
                         {"name": "a", "paper": {"miou": 70.0, "interior_pixel_acc": 94.0}}],
            "report": {"checks": [{"claim": "a beats b", "a": "a", "b": "b", "metric": metric, "expect": expect}]}}


def _metrics_df(values, metric="miou"):
    rows = [{"variant": v, "seed": s, "metrics": {metric: x / 100}} for v, xs in values.items() for s, x in enumerate(xs)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("expect,a,outcome", [
    ("greater", [31.0, 31.1, 30.9], "holds"),
    ("greater", [30.1, 30.0, 30.2], "within noise"),
    ("greater", [29.0, 29.1, 28.9], "reversed"),
    ("less", [29.0, 29.1, 28.9], "holds"),
    ("similar", [30.2, 30.3, 30.1], "holds"),    # within SIMILAR_POINTS
    ("similar", [31.0, 31.1, 30.9], "differs"),
])
def test_claim_outcomes(expect, a, outcome):
    spec = _check_spec(expect)
    (r,) = judge_all(spec, _metrics_df({"b": [30.0, 30.1, 29.9], "a": a}))
    assert r.outcome == outcome
    assert r.paper_delta == pytest.approx(1.0) and r.n == 3
    assert r.delta == pytest.approx(sum(a) / 3 - 30.0)


def test_claims_on_another_metric_and_the_verdict_labels():
    spec = _check_spec(metric="interior_pixel_acc")
    df = _metrics_df({"b": [90.0, 90.1, 89.9], "a": [95.0, 95.1, 94.9]}, "interior_pixel_acc")
    assert judge_all(spec, df)[0].paper_delta == pytest.approx(0.1)
    summary = summarise(spec, df.assign(value=0.0, boundary_miou=math.nan, interior_miou=math.nan, head_weights=1,
                                        macs_head=1, x=None))
    assert verdict(spec, summary, df).label == "reproduced"
    spec["report"]["checks"].append({"claim": "b beats a", "a": "b", "b": "a", "metric": "interior_pixel_acc"})
    v = verdict(spec, summary, df)
    assert v.label == "partially reproduced" and "1 of 2 claims hold" in v.sentence and "b beats a: reversed" in v.sentence
    spec["report"]["checks"] = spec["report"]["checks"][1:]
    assert verdict(spec, summary, df).label == "not reproduced"
    one_seed = df[df.seed == 0]
    assert verdict(spec, summary, one_seed).label == "not enough seeds"


CLAIMS_SPEC = '''
id = "tiny-claims"
title = "Tiny claims"
source = "test fixture"
paper_table = "Large Kernel Matters, Tables 2 and 6"
claim = "GCN + BR beats the 1x1 head; the GCN backbone is no worse"
metric = "miou"
baseline = "baseline"

[paper_config]
in_channels = 2048
num_classes = 21

[report]
columns = ["boundary_pixel_acc", "miou"]

[[report.checks]]
claim = "GCN + BR beats the 1x1 head"
a = "GCN + BR"
b = "baseline"

[[report.checks]]
claim = "the backbones are similar"
a = "GCN backbone"
b = "baseline"
expect = "similar"
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
paper = { miou = 65.7, boundary_pixel_acc = 71.3, head_weights_k = 43 }

[[variants]]
name = "GCN + BR"
model = { head = "gcn_br", k = 5 }
paper = { miou = 72.3, boundary_pixel_acc = 73.4 }

[[variants]]
name = "GCN backbone"
model = { head = "pointwise", backbone = "mini_resnet_gcn" }
paper = { miou = 71.2, boundary_pixel_acc = 71.5 }
'''


def test_end_to_end_claims_backbones_and_paper_config_counts(tiny):
    (tiny["specs"] / "tiny-claims.toml").write_text(CLAIMS_SPEC)
    assert main(cli_args(tiny, "run", "tiny-claims", "--jobs", "1")) == 0
    records = [json.loads(p.read_text()) for p in (tiny["results"] / "tiny-claims" / "mini").glob("*.json")]
    assert len(records) == 6
    for r in records:
        c = r["complexity"]
        assert c["params_backbone"] + c["params_decoder"] == c["params_total"] > 0
        assert c["macs_backbone"] + c["macs_decoder"] == c["macs_total"] > 0
        assert c["head_weights_paper_config"] == {"baseline": 2048 * 21, "GCN backbone": 2048 * 21,
                                                  "GCN + BR": 2 * 5 * 21 * (2048 + 21) + 2 * 9 * 21 * 21}[r["variant"]]
    out = tiny["root"] / "report"
    written = generate(tiny["specs"], tiny["results"], out)
    assert out / "figures" / "tiny-claims.png" in written
    page = (out / "tiny-claims.md").read_text()
    assert "## Claims" in page and "| GCN + BR beats the 1x1 head " in page and "## Backbones" in page
    assert "`mini_resnet_gcn`" in page and "pretraining final loss" in page
    assert "paper boundary-band acc. (%)" in page and "ours boundary-band acc. (%)" in page
    baseline_row = next(line for line in page.splitlines() if line.startswith("| baseline "))
    assert "43K" in baseline_row and "43,008" in baseline_row
    label = page.split("## Verdict: ", 1)[1].split("\n", 1)[0]
    assert label in ("reproduced", "partially reproduced", "not reproduced")


# ------------------------------------------------------------------ ICNet timing page
def _bench(name, table, item, seconds, gmac, **info):
    return {"name": name, "stats": {"median": seconds, "rounds": 1},
            "extra_info": {"table": table, "item": item, "gmac": gmac, "device": "cpu", "threads": 2, **info}}


def test_icnet_timing_page_puts_our_ratios_beside_the_papers(tmp_path):

    benches = [_bench(f"s-{s}-{scale}", "fig1b", s, t * scale, g * scale, scale=scale,
                      **({"paper_res5_over_res4": 4.0} if s == "res5" else {}))
               for scale in (1.0, 0.5) for s, t, g in (("stem", 1, 10), ("res2", 2, 20), ("res3", 2, 20), ("res4", 3, 30),
                                                       ("res5", 12, 120), ("psp", 1, 5), ("head", 4, 40))]
    benches += [_bench("f1", "fig5_input", 1.0, 40.0, 1500, paper_ms=446), _bench("f05", "fig5_input", 0.5, 10.0, 370, paper_ms=123),
                _bench("k05", "table1_kernels", 0.5, 10.0, 370, paper_ms=170, paper_mem_gb=9.2, peak_memory_mb=2000.0),
                _bench("sub124", "table2", "sub124", 2.0, 29, paper_ms=33, paper_mem_gb=1.6, peak_memory_mb=300.0),
                _bench("dc5", "table3", "dc5", 2.2, 30, paper_ms=34)]
    results = tmp_path / "results"
    (results / "benchmarks").mkdir(parents=True)
    (results / "benchmarks" / "icnet-cpu.json").write_text(json.dumps({"benchmarks": benches, "machine_info": {}}))
    (tmp_path / "specs").mkdir()
    written = generate(tmp_path / "specs", results, tmp_path / "report")
    assert {p.name for p in written} == {"index.md", "icnet-timing.md", "icnet-timing.png"}
    page = (tmp_path / "report" / "icnet-timing.md").read_text()
    assert "res5 / res4 at 1024x2048: **ours 4.00x**, paper about 4x" in page
    row = next(line for line in page.splitlines() if line.startswith("| sub124 "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:6] == ["33", "2000", "5.15", "5.00", "12.76"] and "agrees" in cells  # 170/33 vs 10/2.0
    assert "| dc5 " in page and "| cff " in page  # Table 3 borrows sub124 as its CFF row
    index = (tmp_path / "report" / "index.md").read_text()
    assert "ours 5.00x vs paper 5.15x" in index
    (results / "benchmarks" / "icnet-cpu.json").write_text("{not json")
    with pytest.raises(SystemExit, match="icnet-cpu.json"):
        generate(tmp_path / "specs", results, tmp_path / "report")
