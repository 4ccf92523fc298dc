"""Report: statistics, verdicts (both outcomes), end to end from spec to pages, file-only reads."""

import math
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from conftest import cli_args

from ablations.cli import main
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
