"""Strict spec validation: each malformed spec fails before training, naming file, key path and
expectation; the CLI exits with status 2 and writes nothing."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_args, needs_crf

from ablations.cli import main
from ablations.schema import SpecError, load_spec, study_trials
from ablations.sweep import expand

ROOT = Path(__file__).resolve().parent.parent


def _mutate(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


CHECK = (
    'x_default = 1\n[[report.checks]]\nclaim = "c"\na = "{a}"\nb = "baseline"\nexpect = "{expect}"\nmetric = "{metric}"'
)

# (name, old text, new text, expected key path, words the message must contain)
CASES = [
    ("unknown top-level key", 'metric = "miou"', 'metric = "miou"\ncolour = "red"', "colour", "unknown key"),
    (
        "unknown section key",
        "lr = 0.01\nfreeze",
        "lr = 0.01\nlearning_rate = 1.0\nfreeze",
        "scales.mini.train.learning_rate",
        "unknown key",
    ),
    ("wrong type", "steps = 4", 'steps = "four"', "scales.mini.train.steps", "expected an integer"),
    ("unknown model", 'name = "single_head"', 'name = "unet"', "defaults.model.name", "unknown model"),
    ("unknown dataset", 'name = "shapes"', 'name = "coco"', "scales.mini.data.name", "unknown dataset"),
    (
        "unknown backbone",
        'backbone = "mini_resnet"',
        'backbone = "vgg16"',
        "scales.mini.model.backbone",
        "unknown backbone",
    ),
    ("even k", "k = 5 }", "k = 4 }", "variants[2].model.k", "odd"),
    ("duplicate variant name", 'name = "k=5"', 'name = "k=3"', "variants[2].name", "duplicate"),
    ("empty variants", None, None, "variants", "at least one"),
    ("bad seed list", "seeds = [0, 1]", "seeds = [0, 0]", "scales.mini.seeds", "distinct"),
    ("negative seed", "seeds = [0, 1]", "seeds = [-1]", "scales.mini.seeds", "distinct integers in [0,"),
    ("seeds not integers", "seeds = [0, 1]", 'seeds = ["a"]', "scales.mini.seeds", "array of integers"),
    ("variant without name", 'name = "k=3"\n', "", "variants[1].name", "missing required key"),
    ("unknown metric", 'metric = "miou"', 'metric = "accuracy"', "metric", "a metric the runs produce"),
    ("baseline not a variant", 'baseline = "baseline"', 'baseline = "1x1"', "baseline", "name of a variant"),
    ("missing mini scale", "[scales.mini", "[scales.small", "scales.mini", "needs the mini scale"),
    ("gcn without k", 'model = { head = "gcn", k = 3 }', 'model = { head = "gcn" }', "model.k", "needs a kernel size"),
    ("data knob out of range", "radius_min = 3.0", "radius_min = 30.0", "scales.mini.data.radius_min", "radius_max"),
    (
        "bad backbone option",
        "stem_width = 8,",
        "stem_widths = 8,",
        "scales.mini.model.backbone_options.stem_widths",
        "unknown option",
    ),
    (
        "paper value not a number",
        "paper.miou = 70.1",
        'paper.miou = "70.1"',
        "variants[1].paper.miou",
        "expected a number",
    ),
    ("invalid toml", 'id = "tiny"', 'id = "tiny', "<toml>", "not valid TOML"),
    (
        "a variant's delta at a scale the spec lacks",
        "paper.miou = 70.1",
        "scales.paper.model = { k = 5 }\npaper.miou = 70.1",
        "variants[1].scales.paper",
        "no scale 'paper' in this spec",
    ),
    (
        "check names an unknown variant",
        "x_default = 1",
        CHECK.format(a="k=7", expect="greater", metric="miou"),
        "report.checks[0].a",
        "name of a variant",
    ),
    (
        "check with a bad expectation",
        "x_default = 1",
        CHECK.format(a="k=5", expect="bigger", metric="miou"),
        "report.checks[0].expect",
        "expected one of",
    ),
    (
        "check with an unknown metric",
        "x_default = 1",
        CHECK.format(a="k=5", expect="greater", metric="f1"),
        "report.checks[0].metric",
        "a metric the runs produce",
    ),
    (
        "'about equal' check without a margin",
        "x_default = 1",
        CHECK.format(a="k=5", expect="similar", metric="miou"),
        "report.checks[0].margin",
        "equivalence margin",
    ),
    (
        "margin on a directional check",
        "x_default = 1",
        CHECK.format(a="k=5", expect="greater", metric="miou") + "\nmargin = 1.0",
        "report.checks[0].margin",
        "similar",
    ),
    (
        "check with an unknown base metric",
        "x_default = 1",
        CHECK.format(a="k=5", expect="greater", metric="miou") + '\nbase_metric = "f1"',
        "report.checks[0].base_metric",
        "a metric the runs produce",
    ),
    (
        "base metric with b_metric",
        "x_default = 1",
        CHECK.format(a="k=5", expect="greater", metric="miou") + '\nbase_metric = "mean_acc"\nb_metric = "mean_acc"',
        "report.checks[0].base_metric",
        "cannot be combined with b_metric",
    ),
    (
        "base metric equal to the check's metric",
        "x_default = 1",
        CHECK.format(a="k=5", expect="greater", metric="miou") + '\nbase_metric = "miou"',
        "report.checks[0].base_metric",
        "the change would be zero",
    ),
    (
        "ordering check with its own bar",
        'kind = "ordering"',
        'kind = "ordering"\nmin_rho = 0.8',
        "report.checks[1].min_rho",
        "one rank-correlation bar for every spec",
    ),
    (
        "ordering check naming variants",
        'kind = "ordering"',
        'kind = "ordering"\na = "k=5"',
        "report.checks[1].a",
        "takes no a, b",
    ),
    (
        "spec without claims",
        '[[report.checks]]\nclaim = "k=5 beats the 1x1 baseline"\na = "k=5"\nb = "baseline"\n\n'
        '[[report.checks]]\nclaim = "the variants rank as in the paper"\nkind = "ordering"\n',
        "",
        "report.checks",
        "at least one",
    ),
    (
        "every check is ours",
        'b = "baseline"\n\n[[report.checks]]\nclaim = "the variants rank as in the paper"\nkind = "ordering"\n',
        'b = "baseline"\nours = true\n\n[[report.checks]]\nclaim = "the variants rank as in the paper"\nkind = "ordering"\n'
        "ours = true\n",
        "report.checks[1].ours",
        "at least one check must be the paper's",
    ),
    (
        "variant paper_model without the top-level one",
        "paper.miou = 71.1",
        "paper.miou = 71.1\npaper_model.model.k = 7",
        "variants[2].paper_model",
        "top-level [paper_model]",
    ),
    (
        "unknown loss type",
        "lr = 0.01\nfreeze",
        'lr = 0.01\nloss = { seg = { type = "dice" } }\nfreeze',
        "scales.mini.train.loss.seg.type",
        "unknown loss type",
    ),
    (
        "paper_model without num_classes",
        'metric = "miou"',
        'metric = "miou"\npaper_model = { input_size = [64, 64] }',
        "paper_model.num_classes",
        "missing required key",
    ),
]


def _case_text(base: str, old, new) -> str:
    if old is None:  # no variants at all: an empty top-level array
        return "variants = []\n" + base[: base.index("[[variants]]")]
    if old == "[scales.mini":
        return base.replace(old, new)
    return _mutate(base, old, new)


@pytest.mark.parametrize("name,old,new,keypath,words", CASES, ids=[c[0] for c in CASES])
def test_malformed_spec_is_rejected_with_file_keypath_and_expectation(tiny, capsys, name, old, new, keypath, words):
    base = tiny["spec"].read_text()
    tiny["spec"].write_text(_case_text(base, old, new))
    with pytest.raises(SpecError) as info:
        expand(load_spec(tiny["spec"]), "mini", results_dir=tiny["results"])  # structure, then each run's config
    err = info.value
    assert err.file == str(tiny["spec"])
    assert err.path.endswith(keypath), (err.path, keypath)
    assert words in err.message
    # The CLI: exit 2, the file and key path in the message, nothing written anywhere.
    code = main(cli_args(tiny, "run", "tiny"))
    assert code == 2
    message = capsys.readouterr().err
    assert str(tiny["spec"]) in message and keypath in message
    assert not tiny["results"].exists() and not tiny["cache"].exists()


@pytest.mark.slow
def test_cli_exit_status_is_2_in_a_real_process(tiny):
    text = tiny["spec"].read_text().replace("k = 5 }", "k = 6 }")
    tiny["spec"].write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "ablations", *cli_args(tiny, "run", "tiny")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert re.search(r"tiny\.toml: variants\[2\]\.model\.k: expected a positive odd kernel size", proc.stderr)
    assert not tiny["results"].exists()


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["run", "tiny", "--scale", "paper"], "no scale 'paper'"),
        (["run", "tiny", "--seeds", "1", "1"], "--seeds"),
        (["run", "tiny", "train.stepz=3"], "train.stepz"),
        (["run", "tiny", "--variant", "k=3", "model.k=4"], "odd"),
        (["run", "tiny", "model.k=4"], "takes no k"),  # the 1x1 baseline is checked first
        (["run", "tiny", "steps=3"], "section.key"),
        (["run", "nope"], "no ablation 'nope'"),
        (["run", "tiny", "--jobs", "0"], "--jobs"),
    ],
)
def test_bad_command_line_exits_2_and_writes_nothing(tiny, capsys, args, fragment):
    assert main(cli_args(tiny, *args)) == 2
    assert fragment in capsys.readouterr().err
    assert not tiny["results"].exists()


@needs_crf
@pytest.mark.slow
def test_every_shipped_spec_validates_at_every_scale():
    specs = sorted((ROOT / "ablations" / "specs").glob("*.toml"))
    assert specs
    for path in specs:
        spec = load_spec(path)
        if spec.kind == "timing":
            continue
        for scale in spec.scales:
            runs = expand(spec, scale, results_dir=Path("/nonexistent"))  # a [study]'s search runs
            assert len(runs) == len(spec.variants) * len(spec.seeds(scale)) * len(study_trials(spec))
            assert len({r["path"] for r in runs}) == len(runs)


def test_gcn_k_spec_carries_the_papers_numbers():
    spec = load_spec(ROOT / "ablations" / "specs" / "gcn-k.toml")
    assert [v.name for v in spec.variants] == ["baseline"] + [f"k={k}" for k in range(3, 16, 2)]
    assert [v.paper["miou"] for v in spec.variants] == [69.0, 70.1, 71.1, 72.8, 73.4, 73.7, 74.0, 74.5]
    assert len(spec.seeds("mini")) >= 3


@pytest.mark.slow
def test_paper_model_head_counts_match_tables_2_and_4_to_the_thousand():
    """The heads of gcn-vs-conv and stack-width, counted at the paper's configuration (the
    variant's model at the paper scale, 21 classes, 512 px; the paper's m) on the meta device,
    have the paper's parameter counts (which it rounds or truncates to thousands)."""
    from ablations.runner import paper_models

    checked = 0
    for spec_id in ("gcn-vs-conv", "stack-width"):
        spec = load_spec(ROOT / "ablations" / "specs" / f"{spec_id}.toml")
        counts = paper_models(spec)
        for variant in spec.variants:
            if "head_weights" not in variant.paper:
                continue
            assert abs(counts[variant.name]["parts"]["head"]["weights"] - variant.paper["head_weights"]) < 1000, (
                variant.name
            )
            checked += 1
    assert checked == 8 + 4
