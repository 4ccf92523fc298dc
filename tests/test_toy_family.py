"""Adding a model family and a table for it: one family module (tests/toy_family.py, standing in
for ``seg_core/models/<family>.py``), one spec file, one test file. Nothing in ``ablations/`` or
``report/`` is touched: the driver validates the new model's options through its builder, runs
it, and the report renders its table, claims and figure."""

import json

import pytest
import toy_family  # noqa: F401  (registers the toy family, as seg_core/models/__init__ imports a family)
from conftest import cli_args

from ablations.cli import main
from report.generate import generate

TOY_SPEC = """
extends = ["_base/toy-mini.toml"]
id = "toy-kernel"
title = "Toy: the classifier's kernel size"
source = "test fixture"
paper_table = "Toy paper, Table 1"
paper_dataset = "a toy dataset"
claim = "A 5x5 classifier beats a 1x1 one."
metric = "miou"
baseline = "1x1"

[report]
complexity = ["head.weights"]

[[report.checks]]
claim = "5x5 beats 1x1"
a = "5x5"
b = "1x1"

[[variants]]
name = "1x1"
model.kernel = 1
paper.miou = 60.0

[[variants]]
name = "5x5"
model.kernel = 5
paper.miou = 62.0
"""

TOY_BASE = """
[defaults.model]
name = "toy_fcn"
backbone = "mini_resnet"
backbone_options = { stem_width = 8, widths = [8, 16, 16], strides = [1, 2, 2] }

[scales.mini]
seeds = [0, 1]

[scales.mini.data]
name = "shapes"
size = 32
radius_min = 3.0
radius_max = 12.0
train_images = 32
val_images = 16

[scales.mini.train]
steps = 3
batch_size = 8
lr = 0.01
"""


@pytest.mark.slow
def test_a_new_family_and_its_table_need_no_driver_or_report_change(tiny, capsys):
    (tiny["specs"] / "_base").mkdir()
    (tiny["specs"] / "_base" / "toy-mini.toml").write_text(TOY_BASE)
    (tiny["specs"] / "toy-kernel.toml").write_text(TOY_SPEC)
    bad = TOY_SPEC.replace("model.kernel = 5", "model.kernel = 7")
    (tiny["specs"] / "toy-kernel.toml").write_text(bad)
    assert main(cli_args(tiny, "run", "toy-kernel", "--jobs", "1")) == 2  # the builder's own rule, at the spec line
    assert "toy-kernel.toml: variants[1].model.kernel: expected 1, 3 or 5, got 7" in capsys.readouterr().err
    (tiny["specs"] / "toy-kernel.toml").write_text(TOY_SPEC)
    assert main(cli_args(tiny, "list")) == 0
    assert "toy-kernel" in capsys.readouterr().out and "_base" not in capsys.readouterr().out
    assert main(cli_args(tiny, "run", "toy-kernel", "--jobs", "1")) == 0
    records = [json.loads(p.read_text()) for p in (tiny["results"] / "toy-kernel" / "mini").glob("*.json")]
    assert len(records) == 4 and {r["complexity"]["parts"]["head"]["weights"] for r in records} == {16 * 5, 25 * 16 * 5}
    written, errors = generate(tiny["specs"], tiny["results"], tiny["root"] / "report")
    assert not errors
    page = (tiny["root"] / "report" / "toy-kernel.md").read_text()
    assert "## Verdict:" in page and "| 5x5 beats 1x1 " in page and "a toy dataset" in page
    assert "head weights (mini)" in page
    assert (tiny["root"] / "report" / "figures" / "toy-kernel.png").exists()
