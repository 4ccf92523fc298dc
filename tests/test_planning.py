"""``ablations plan`` on CPU: each pending run's minutes on this machine, from recorded runs of the
same config (scaled by the calibration figures) or from MACs at the spec's recorded seconds per
MAC, packed onto the runner's parallel jobs."""

from __future__ import annotations

import json
import math
import re

import pytest
from conftest import cli_args

import ablations.planning
from ablations.cli import main as ablations_main
from ablations.planning import config_key, packed_wall_time, read_recorded_work


def test_runs_are_packed_in_the_runners_order_onto_free_workers():
    assert packed_wall_time([10, 10, 10], 2) == 20
    assert packed_wall_time([5, 30, 5], 2) == 30  # the third starts when the first worker frees
    assert packed_wall_time([30, 5, 5, 5], 2) == 30
    assert packed_wall_time([10, 10], 1) == 20
    assert packed_wall_time([], 2) == 0


@pytest.fixture
def recorded(tiny, monkeypatch):
    """The tiny spec with seed 0 of every variant run, k=5's result removed, and this machine's
    calibration pinned to 0.1 GFLOP/s (so that the tiny runs' estimates are minutes, not zeros)."""
    assert ablations_main(cli_args(tiny, "run", "tiny", "--seeds", "0", "--jobs", "1")) == 0
    for path in (tiny["results"] / "tiny" / "mini").glob("k-5--*.json"):
        path.unlink()
    monkeypatch.setattr(ablations.planning, "loaded_calibration", lambda jobs: 0.1)
    return tiny


def _rows(out: str) -> dict[tuple[str, int], tuple[str, float, str]]:
    rows = {}
    for line in out.splitlines():
        m = re.match(
            r"^(\S+)\s+(\d+)\s+(done|reuse|to run)\s+\S+\s+\d+ x \d+\s+(\S+)\s+(recorded|MACs|no record)$", line
        )
        if m:
            rows[(m[1], int(m[2]))] = (m[3], math.nan if m[4] == "-" else float(m[4]), m[5])
    return rows


@pytest.mark.slow
def test_plan_estimates_from_recorded_runs_scaled_by_calibration_and_from_macs(recorded, capsys):
    assert ablations_main(cli_args(recorded, "plan", "tiny", "--scale", "mini", "--jobs", "1")) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) == {(v, s) for v in ("baseline", "k=3", "k=5") for s in (0, 1)}, out
    record = json.loads(next((recorded["results"] / "tiny" / "mini").glob("k-3--seed0--*.json")).read_text())
    units = record["timing"]["wall_s"] * record["provenance"]["calibration_gflops"]
    assert rows[("k=3", 1)] == ("to run", pytest.approx(units / 0.1 / 60, abs=0.06), "recorded")
    assert rows[("k=3", 0)][0] == "done"
    assert rows[("k=5", 0)][2] == rows[("k=5", 1)][2] == "MACs"  # no result of k=5's config anywhere
    k3, k5 = rows[("k=3", 1)][1], rows[("k=5", 1)][1]
    assert 0.3 * k3 < k5 < 5 * k3  # the same spec's seconds per MAC, at k=5's MACs
    total = re.search(
        r"to run: about (\d+) min on this machine \((\d+) runs, 1 at a time; calibration now 0.1 GFLOP/s", out
    )
    assert total and int(total[2]) == 4, out
    pending = [minutes for status, minutes, _ in rows.values() if status == "to run"]
    assert abs(int(total[1]) - sum(pending)) <= 1  # one job: the runs one after another
    assert "estimates: 2 MACs, 2 recorded" in out


def test_plan_counts_a_run_another_spec_computed_as_reused_not_to_run(recorded, capsys):
    """The runner copies a result of an identical config from another spec instead of computing
    it; the plan says so and does not count its minutes."""
    twin = recorded["specs"] / "twin.toml"
    twin.write_text(recorded["spec"].read_text().replace('id = "tiny"', 'id = "twin"'))
    assert ablations_main(cli_args(recorded, "plan", "twin", "--scale", "mini", "--jobs", "1")) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert rows[("baseline", 0)][0] == rows[("k=3", 0)][0] == "reuse" and rows[("k=5", 0)][0] == "to run"
    assert "(0 done, 2 reused from other specs, 4 to run)" in out and "(4 runs, 1 at a time" in out


@pytest.mark.slow
def test_plan_cold_estimates_every_run_as_if_none_were_done(recorded, capsys):
    assert ablations_main(cli_args(recorded, "plan", "tiny", "--scale", "mini", "--cold")) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 6 and all(status == "to run" for status, _, _ in rows.values())


def test_the_estimator_reads_only_successful_records_with_a_calibration(recorded, tmp_path):
    directory = recorded["results"] / "tiny" / "mini"
    good = next(directory.glob("k-3--seed0--*.json"))
    broken = json.loads(good.read_text())
    broken["provenance"].pop("calibration_gflops")
    (directory / "nocal.json").write_text(json.dumps(broken))
    (directory / "garbage.json").write_text("{not json")
    work = read_recorded_work(recorded["results"])
    record = json.loads(good.read_text())
    assert work.by_config[config_key(record["config"])] == [
        pytest.approx(record["timing"]["wall_s"] * record["provenance"]["calibration_gflops"])
    ]
    assert set(work.by_spec) == {"tiny"}


def test_plan_names_a_trunk_that_is_not_pretrained_yet(tiny, capsys, monkeypatch):
    monkeypatch.setattr(ablations.planning, "loaded_calibration", lambda jobs: 100.0)
    assert ablations_main(cli_args(tiny, "plan", "tiny", "--scale", "mini")) == 0
    out = capsys.readouterr().out
    assert "trunk mini_resnet (3 steps): not in the cache" in out
    assert "6 run(s) of configs no result records are not counted" in out  # nothing recorded: no guess


def test_plan_refuses_zero_jobs(tiny, capsys):
    assert ablations_main(cli_args(tiny, "plan", "tiny", "--scale", "mini", "--jobs", "0")) == 2
    assert "--jobs" in capsys.readouterr().err


def test_the_calibration_under_load_is_measured_with_other_threads_busy():
    import torch

    from ablations.planning import loaded_calibration

    before = torch.get_num_threads()
    assert loaded_calibration(1) > 0 and loaded_calibration(2) > 0
    assert torch.get_num_threads() == before  # the caller's threads restored
