"""``[study]``: nuisance hyperparameters searched per variant and seed and chosen on the held-out
split, never on val; scientific and fixed keys on the page."""

from __future__ import annotations

import json

import pytest
from conftest import cli_args

from ablations.cli import main
from ablations.schema import SpecError, load_spec

STUDY = """
[study]
scientific = ["model.head", "model.k"]
nuisance = { "train.lr" = [0.005, 0.05] }
fixed = ["train.steps", "train.batch_size"]
"""


def _study_spec(tiny, study: str = STUDY, holdout: bool = True) -> None:
    text = tiny["spec"].read_text().replace("[defaults.model]", study + "\n[defaults.model]")
    if holdout:
        text = text.replace("val_images = 16", "val_images = 16\nholdout_images = 16")
    tiny["spec"].write_text(text)


def test_the_sweep_runs_every_nuisance_setting_of_every_variant_and_seed(tiny, capsys):
    _study_spec(tiny)
    assert main(cli_args(tiny, "run", "tiny", "--dry-run")) == 0
    names = sorted(p.split("/")[-1].rsplit("--", 1)[0] for p in capsys.readouterr().out.split())
    assert names == sorted(
        f"{v}--lr-{lr}--seed{s}" for v in ("baseline", "k-3", "k-5") for lr in ("0-005", "0-05") for s in (0, 1)
    )
    assert main(cli_args(tiny, "run", "tiny", "--dry-run", "train.lr=0.1")) == 2  # a nuisance key is not an override
    assert "is searched by the spec's [study]" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("study", "holdout", "words"),
    [
        (STUDY, False, "set data.holdout_images"),
        ('[study]\nnuisance = { "lr" = [0.1] }', True, "expected a config key section.key"),
        ('[study]\nnuisance = { "train.lr" = [0.1, 0.1] }', True, "distinct values"),
        ('[study]\nnuisance = { "train.lr" = [0.1] }\nfixed = ["train.lr"]', True, "cannot be nuisance and"),
    ],
)
def test_a_malformed_study_is_refused(tiny, study, holdout, words):
    from ablations.sweep import expand

    _study_spec(tiny, study, holdout)
    with pytest.raises(SpecError, match=words):
        expand(load_spec(tiny["spec"]), "mini", results_dir=tiny["results"])


def test_the_report_chooses_each_runs_setting_on_held_out_data_never_on_val(tiny, tmp_path):
    """Runs are made, then their held-out and val numbers are set so that the two splits would
    choose differently: the page must take the held-out choice and show that run's val number."""
    from report.generate import generate
    from report.load import load_table

    _study_spec(tiny)
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--variant", "baseline", "--seeds", "0")) == 0
    files = {p.name.split("--")[1]: p for p in (tiny["results"] / "tiny" / "mini").glob("baseline--*.json")}
    assert sorted(files) == ["lr-0-005", "lr-0-05"]
    for slug, (holdout, val) in {"lr-0-005": (0.9, 0.1), "lr-0-05": (0.2, 0.8)}.items():
        record = json.loads(files[slug].read_text())
        record["holdout_metrics"]["miou"], record["metrics"]["miou"] = holdout, val
        files[slug].write_text(json.dumps(record))
    spec = load_spec(tiny["spec"])
    table = load_table(spec, tiny["results"], "mini")
    (choice,) = table.choices
    assert choice["chosen"] == {"train.lr": 0.005}  # the held-out best, though val would pick 0.05
    assert table.runs.loc[table.runs.variant == "baseline", "value"].tolist() == [pytest.approx(10.0)]
    assert not table.stale  # the setting not chosen is a used file, not a stale one
    written, errors = generate(tiny["specs"], tiny["results"], tmp_path / "report")
    page = (tmp_path / "report" / "tiny.md").read_text()
    assert "## Tuned per variant and seed" in page and "`train.lr` in [0.005, 0.05]" in page
    assert "**Held fixed**" in page and "`train.steps` = 4" in page and "`train.batch_size` = 8" in page
    assert "- train.lr = 0.005, the smallest value searched: baseline (seed 0)." in page  # the chosen value is an edge


def test_only_choices_at_an_end_of_a_numeric_grid_are_listed_as_at_its_edge():
    from report.pages import _at_edge

    choices = [
        {"variant": "a", "seed": 0, "chosen": {"train.lr": 0.1, "opt": "sgd"}},
        {"variant": "a", "seed": 1, "chosen": {"train.lr": 0.3, "opt": "sgd"}},
        {"variant": "b", "seed": 0, "chosen": {"train.lr": 0.03, "opt": "adam"}},
        {"variant": "b", "seed": 1, "chosen": None},  # every setting failed
    ]
    lines = _at_edge(choices, {"train.lr": [0.03, 0.1, 0.3], "opt": ["sgd", "adam"]})
    assert lines[2:4] == [
        "- train.lr = 0.03, the smallest value searched: b (seed 0).",
        "- train.lr = 0.3, the largest value searched: a (seed 1).",
    ]
    assert _at_edge(choices[:1], {"train.lr": [0.03, 0.1, 0.3]}) == []  # the middle value: no section


def test_a_search_picks_each_setting_on_short_runs_then_runs_it_with_the_specs_own_schedule(tiny, tmp_path, capsys):
    from report.load import load_table

    _study_spec(tiny, STUDY + 'search = { "train.steps" = 2 }\n')
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--variant", "k=3", "--seeds", "0")) == 0
    names = sorted(p.name.rsplit("--", 1)[0] for p in (tiny["results"] / "tiny" / "mini").glob("k-3--*.json"))
    search = [n for n in names if n.endswith("--search--seed0")]
    final = [n for n in names if not n.endswith("--search--seed0")]
    assert len(search) == 2 and len(final) == 1  # both settings searched, the chosen one run in full
    records = {p.name: json.loads(p.read_text()) for p in (tiny["results"] / "tiny" / "mini").glob("k-3--*.json")}
    steps = sorted(r["training"]["steps"] for r in records.values())
    assert steps == [2, 2, 4]
    table = load_table(load_spec(tiny["spec"]), tiny["results"], "mini")
    (choice,) = table.choices
    best = max(
        (r for n, r in records.items() if "--search--" in n),
        key=lambda r: (r["holdout_metrics"]["miou"], -r["config"]["train"]["lr"]),
    )
    assert choice["chosen"] == {"train.lr": best["config"]["train"]["lr"]}
    used = table.runs.iloc[0]["record"]
    assert used["training"]["steps"] == 4 and used["config"]["train"]["lr"] == best["config"]["train"]["lr"]
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--variant", "k=3", "--seeds", "0")) == 0
    assert "0 ran" in capsys.readouterr().err.splitlines()[-1]  # unchanged: nothing runs again


def test_a_setting_that_diverges_is_left_out_of_the_choice_not_a_failed_sweep(tiny, capsys):
    _study_spec(tiny, STUDY.replace("[0.005, 0.05]", "[0.005, 1e9]"))
    code = main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--variant", "k=3", "--seeds", "0"))
    err = capsys.readouterr().err
    assert code == 0 and "settings that diverged, left out of the choice" in err and "k=3 seed 0: diverged" in err
    records = [json.loads(p.read_text()) for p in (tiny["results"] / "tiny" / "mini").glob("k-3--*.json")]
    assert sorted(r["status"] for r in records) == ["failed", "ok"]


@pytest.mark.slow
def test_a_tuned_spec_extends_the_untuned_one_and_its_page_puts_both_verdicts_side_by_side(tiny, tmp_path):
    from report.generate import generate

    (tiny["specs"] / "tiny-tuned.toml").write_text(
        'extends = ["tiny.toml"]\nid = "tiny-tuned"\ntitle = "Tiny GCN sweep, lr tuned"\n\n'
        '[report]\nbeyond = "tiny"\n\n[scales.mini.data]\nholdout_images = 16\n\n'
        '[study]\nuntuned = "tiny"\nnuisance = { "train.lr" = [0.005, 0.01] }\n'
    )
    for spec_id in ("tiny", "tiny-tuned"):
        assert main(cli_args(tiny, "run", spec_id, "--jobs", "1", "--seeds", "0")) == 0
    tuned = sorted(p.name.rsplit("--", 2)[0] for p in (tiny["results"] / "tiny-tuned" / "mini").glob("*.json"))
    assert len(tuned) == 6 and "k-5--lr-0-01" in tuned
    generate(tiny["specs"], tiny["results"], tmp_path / "report")
    page = (tmp_path / "report" / "tiny-tuned.md").read_text()
    assert "## Tuned vs untuned" in page and "[tiny](tiny.md)" in page and "k=5 beats the 1x1 baseline" in page
    index = (tmp_path / "report" / "index.md").read_text()
    assert "## Beyond the papers" in index
    row = next(line for line in index.split("## Beyond the papers")[0].splitlines() if "](tiny.md)" in line)
    assert row.rstrip(" |").endswith("[tiny-tuned](tiny-tuned.md)")  # linked from the table it tests


@pytest.mark.slow
def test_a_chosen_setting_whose_final_run_fails_gives_way_to_the_next_best(tiny, tmp_path, capsys, monkeypatch):
    """The search run at the chosen setting is fine, but the final run (the spec's own schedule) at
    it diverges: the sweep runs the next best setting's final run, succeeds, and the report uses
    that run and says on the page where the fallback happened. Unchanged, nothing runs again."""
    import ablations.execute
    from report.generate import generate
    from report.load import load_table
    from seg_core.engine import TrainingDiverged

    real, diverged = ablations.execute.run, []

    def first_final_diverges(config, **kwargs):
        if config["train"]["steps"] == 4 and not diverged:  # a final run (the search runs take 2 steps)
            diverged.append(config["train"]["lr"])
            raise TrainingDiverged(step=3, loss=float("nan"), lr=config["train"]["lr"])
        return real(config, **kwargs)

    monkeypatch.setattr(ablations.execute, "run", first_final_diverges)
    _study_spec(tiny, STUDY + 'search = { "train.steps" = 2 }\n')
    args = cli_args(tiny, "run", "tiny", "--jobs", "1", "--variant", "k=3", "--seeds", "0")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "1 chosen before failed in the final run: the next best instead" in err
    assert "settings that diverged, left out of the choice" in err and "k=3 seed 0: diverged at step 3" in err
    records = [json.loads(p.read_text()) for p in (tiny["results"] / "tiny" / "mini").glob("k-3--*.json")]
    finals = {r["config"]["train"]["lr"]: r["status"] for r in records if r["config"]["train"]["steps"] == 4}
    (first,) = diverged
    (other,) = {0.005, 0.05} - {first}
    assert finals == {first: "failed", other: "ok"}

    table = load_table(load_spec(tiny["spec"]), tiny["results"], "mini")
    (choice,) = table.choices
    assert choice["chosen"] == {"train.lr": other}
    assert choice["gave_way"] == [{"setting": {"train.lr": first}, "failure": _failure(records)}]
    assert table.runs.iloc[0]["record"]["config"]["train"]["lr"] == other and not table.stale
    generate(tiny["specs"], tiny["results"], tmp_path / "report")
    page = (tmp_path / "report" / "tiny.md").read_text()
    assert (
        f"**k=3, seed 0**: train.lr = {first} was best on the held-out images, but its final run diverged at step 3"
        in page
    )
    assert f"the next best, train.lr = {other}, is the run used" in page

    assert main(args) == 0
    assert "0 ran" in capsys.readouterr().err.splitlines()[-1]  # unchanged: nothing runs again


def _failure(records: list[dict]) -> dict:
    (failed,) = [r for r in records if r["status"] == "failed"]
    return failed["failure"]
