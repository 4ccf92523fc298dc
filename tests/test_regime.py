"""Issue 30 (3): "not testable at this scale", decided by a rule that reads models and data sizes.

The tap count (seg_core.regime), the rule (ablations.regime), the spec's hand-stated reasons
(schema), the report's outcome and verdict, and the committed measurements being current.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import cli_args
from torch import nn

from ablations.cli import main
from ablations.regime import is_testable, regime_text
from ablations.schema import MIN_TAP_SHARE, SpecError, load_spec, load_specs
from report.checks import NOT_TESTABLE, CheckResult, table_verdict
from report.generate import generate
from report.load import ReportInputError
from seg_core.regime import _axis, conv_taps, tap_coverage

ROOT = Path(__file__).resolve().parent.parent


def test_a_3x3_at_rate_8_on_an_8x8_map_keeps_only_its_centre_tap():
    conv = nn.Conv2d(4, 4, 3, padding=8, dilation=8)
    assert conv_taps(conv, (8, 8)).share == pytest.approx(1 / 9)
    assert conv_taps(conv, (33, 33)).share == pytest.approx(((33 + 25 + 25) / 99) ** 2)  # the paper's map: 70%
    assert conv_taps(nn.Conv2d(4, 4, 3, padding=1), (64, 64)).share == pytest.approx((1 - 2 / (3 * 64)) ** 2)
    assert conv_taps(nn.Conv2d(4, 4, (1, 15), padding=(0, 7)), (16, 16)).share == pytest.approx(0.7667, abs=1e-4)


def test_the_closed_form_tap_count_equals_counting_every_tap():
    def brute(n, k, s, p, d):
        out = max((n + 2 * p - d * (k - 1) - 1) // s + 1, 0)
        return sum(0 <= o * s - p + t * d < n for o in range(out) for t in range(k)), out

    for n, k, s, p, d in itertools.product(range(1, 10), range(1, 7), range(1, 4), range(0, 8), range(1, 5)):
        assert _axis(n, k, s, p, d) == brute(n, k, s, p, d), (n, k, s, p, d)


def test_tap_coverage_finds_each_spatial_convolution_at_its_own_map_size():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=4, dilation=4)
    )
    model.train()
    found = tap_coverage(model, (16, 16))
    assert set(found) == {"0", "2"} and model.training  # the 1x1 has no taps to lose; the mode is kept
    assert found["0"].map_size == (16, 16) and found["2"].map_size == (8, 8)
    assert found["2"].share == pytest.approx(((8 + 4 + 4) / 24) ** 2)
    with torch.device("meta"):  # shapes only: the meta device serves
        assert tap_coverage(nn.Sequential(nn.Conv2d(3, 4, 3, padding="same")), (5, 5))["0"].map_size == (5, 5)


def test_the_rule_reads_the_papers_regime_too():
    assert is_testable(None, None) and is_testable(MIN_TAP_SHARE, 0.9)
    assert not is_testable(0.2, 0.7)  # degenerate here, not in the paper: the mechanism is not expressed
    assert is_testable(0.25, 0.27)  # degenerate in the paper too (rate 24 on 33 cells): the paper's own regime
    assert not is_testable(0.2, None)  # no paper configuration to compare: the mini share alone decides


def _tiny_with_a_wide_rate(tiny) -> Path:
    """The tiny spec (8x8 top maps) with DeepLab v2 heads: a 3x3 at rate 6 claimed to beat one at
    rate 1. At rate 6, 12 of the 24 taps per axis read the map: a quarter in all."""
    spec = tiny["spec"]
    text = spec.read_text()
    text = text.replace('name = "single_head"', 'name = "deeplab_v2"')
    text = text.replace('headline = "k=5"', 'headline = "r=6"')
    text = text.replace(
        "strides = [1, 2, 2] }",
        "strides = [1, 2, 2] }\nfeature_map = 8\npaper_feature_map = 8\nwidth_scale = 0.0078125",
    )
    head = text.index("[[variants]]")
    variants = ""
    for name, rate, paper in (("baseline", 1, 69.0), ("r=3", 3, 70.1), ("r=6", 6, 71.1)):
        variants += f'[[variants]]\nname = "{name}"\nmodel = {{ rates = [{rate}], kernel = 3, width = 1024 }}\n'
        variants += f"paper.miou = {paper}\n\n"
    text = text[:head] + variants
    text = text.replace('a = "k=5"', 'a = "r=6"').replace("k=5 beats the 1x1 baseline", "rate 6 beats rate 1")
    text = text.replace('x = "model.k"\nx_label = "k"\nx_default = 1\n', "")
    spec.write_text(text)
    return spec


def test_a_claim_on_filters_that_read_mostly_padding_is_measured_not_testable(tiny):
    spec = load_spec(_tiny_with_a_wide_rate(tiny))
    measured = json.loads(regime_text(spec))
    wide, order = measured["claims"]
    assert wide["claim"] == "rate 6 beats rate 1" and not wide["testable"]
    assert wide["mini"]["min_share"] == pytest.approx(0.25) and wide["paper"] is None
    pair = wide["pairs"][0]["mini"]
    assert pair["worst"]["dilation"] == [6, 6] and pair["worst"]["map"] == [8, 8] and pair["side"] == "a"
    # the rank orders every pair of variants with a paper value, rate 6 among them
    assert order["kind"] == "ordering" and len(order["pairs"]) == 3 and not order["testable"]


@pytest.mark.slow
def test_the_report_shows_the_claim_as_not_testable_and_judges_the_table_on_the_rest(tiny):
    _tiny_with_a_wide_rate(tiny)
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--variant", "baseline", "--variant", "r=6")) == 0
    assert (tiny["results"] / "tiny" / "regime.json").is_file()  # written by run
    out = tiny["root"] / "report"
    generate(tiny["specs"], tiny["results"], out)
    page = (out / "tiny.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| C1 "))
    assert "not testable at this scale (only 25% of the taps of the differing filters land on the feature map" in row
    assert "## Verdict: incomplete" in page  # the rank still misses r=3: incomplete stays incomplete
    index = (out / "index.md").read_text()
    assert "not testable" in index.split("## ", 2)[1]  # a column of the summary


def test_a_page_without_a_regime_measurement_says_so(tiny):
    _tiny_with_a_wide_rate(tiny)
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--variant", "baseline", "--variant", "r=6")) == 0
    (tiny["results"] / "tiny" / "regime.json").unlink()
    generate(tiny["specs"], tiny["results"], tiny["root"] / "report")
    page = (tiny["root"] / "report" / "tiny.md").read_text()
    assert "The scale check was not measured" in page and "not testable at this scale (" not in page


def test_a_regime_file_measured_for_other_claims_stops_the_report(tiny):
    _tiny_with_a_wide_rate(tiny)
    assert main(cli_args(tiny, "regime", "tiny")) == 0
    spec = tiny["spec"]
    spec.write_text(spec.read_text().replace("rate 6 beats rate 1", "rate 6 helps"))
    with pytest.raises(
        ReportInputError, match=r"regime\.json: claim 1 was measured for another claim.*ablations regime tiny"
    ):
        generate(tiny["specs"], tiny["results"], tiny["root"] / "report")
    spec.write_text(spec.read_text().replace("rate 6 helps", "rate 6 beats rate 1"))
    spec.write_text(spec.read_text().replace("rates = [6]", "rates = [5]"))  # the same claims, other filters
    with pytest.raises(ReportInputError, match="measured on other models or data"):
        generate(tiny["specs"], tiny["results"], tiny["root"] / "report")


@pytest.mark.parametrize(
    "mark, message",
    [
        (
            '{ kind = "valid_taps", reason = "rate 8 on an 8x8 map keeps the centre tap only" }',
            "measured for every claim",
        ),
        ('{ kind = "because", reason = "rate 8 on an 8x8 map keeps the centre tap only" }', 'expected "stated"'),
        ('{ kind = "stated", reason = "too small" }', "at least 8 words"),
        ('{ kind = "stated" }', "reason"),
        ('"the maps are too small"', "expected a table"),
    ],
)
def test_a_spec_marks_a_claim_untestable_only_with_a_stated_reason(tiny, mark, message):
    spec = tiny["spec"]
    spec.write_text(spec.read_text().replace('a = "k=5"\n', f'a = "k=5"\nnot_testable = {mark}\n', 1))
    with pytest.raises(SpecError, match="report.checks\\[0\\].not_testable") as e:
        load_spec(spec)
    assert message in str(e.value) and str(spec) in str(e.value)


@pytest.mark.slow
def test_a_stated_reason_shows_on_the_page_and_keeps_the_claim_out_of_the_verdict(tiny):
    spec = tiny["spec"]
    reason = "the synthetic shapes carry no texture, which the paper's method reads at every pixel"
    spec.write_text(
        spec.read_text().replace(
            'a = "k=5"\n', f'a = "k=5"\nnot_testable = {{ kind = "stated", reason = "{reason}" }}\n', 1
        )
    )
    assert load_spec(spec).report["checks"][0]["not_testable"]["reason"] == reason
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1")) == 0
    out = tiny["root"] / "report"
    generate(tiny["specs"], tiny["results"], out)
    page = (out / "tiny.md").read_text()
    assert f"not testable at this scale ({reason})" in page
    assert "1 not testable at this scale" in page.split("## Verdict", 1)[1].split("## Claims", 1)[0]


def _result(outcome: str) -> CheckResult:
    return CheckResult(claim="c", kind="pairwise", metric="miou", expect="greater", outcome=outcome)


def test_untestable_claims_are_counted_beside_the_verdict_never_as_failures():
    both = table_verdict([_result("holds"), _result(NOT_TESTABLE)])
    assert (
        both.label == "reproduced"
        and both.short == "reproduced: the one testable claim holds; 1 not testable at this scale"
    )
    only = table_verdict([_result(NOT_TESTABLE), _result(NOT_TESTABLE)])
    assert only.label == "not testable at this scale"
    assert table_verdict([_result("reversed"), _result(NOT_TESTABLE)]).label == "not reproduced"


def test_committed_regime_measurements_are_current():
    """Every committed results/<id>/regime.json is what `python -m ablations regime` writes from
    the specs and code as they are (the report's not-testable outcomes rest on them)."""
    specs, errors = load_specs(ROOT / "ablations" / "specs")
    assert not errors
    checked = 0
    for spec in (s for s in specs if s.kind == "ablation"):
        path = ROOT / "results" / spec.id / "regime.json"
        assert path.is_file(), f"{path} missing: python -m ablations regime {spec.id}"
        assert path.read_text() == regime_text(spec), f"{path} is stale: python -m ablations regime {spec.id}"
        checked += 1
    assert checked >= 21 and not math.isnan(MIN_TAP_SHARE)
