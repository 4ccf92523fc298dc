"""Runner: resume, stale results, override isolation, locking, and recovery from SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_args, write_tiny_spec

from ablations.cli import main
from ablations.runner import RunnerBusy, directory_lock
from report.generate import generate

ROOT = Path(__file__).resolve().parent.parent


def results(t, tag="mini"):
    return sorted((t["results"] / "tiny" / tag).glob("*.json"))


def test_resume_never_reruns_and_leaves_files_identical(tiny):
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1")) == 0
    files = results(tiny)
    assert len(files) == 6  # 3 variants x 2 seeds
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1")) == 0
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in results(tiny)} == before


def test_changed_config_never_reuses_a_stale_result(tiny):
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--variant", "k=3")) == 0
    old = {p.name for p in results(tiny)}
    write_tiny_spec(tiny["specs"], steps=5)  # a changed training schedule
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--variant", "k=3")) == 0
    new = {p.name for p in results(tiny)}
    assert len(new) == 2 and not (old & new)  # new hashes; stale files pruned
    for p in results(tiny):
        assert json.loads(p.read_text())["config"]["train"]["steps"] == 5


def test_overrides_go_to_their_own_directory(tiny):
    assert (
        main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--seeds", "0", "--variant", "baseline", "train.steps=2"))
        == 0
    )
    assert not (tiny["results"] / "tiny" / "mini").exists()
    (tag,) = [d.name for d in (tiny["results"] / "tiny").iterdir() if d.is_dir()]  # regime.json beside it
    assert tag.startswith("mini+")
    (path,) = results(tiny, tag)
    record = json.loads(path.read_text())
    assert record["overrides"] == {"train.steps": 2} and record["config"]["train"]["steps"] == 2
    generate(tiny["specs"], tiny["results"], tiny["root"] / "report", tag=tag)
    index = (tiny["root"] / "report" / "index.md").read_text()
    assert f"| {tag} | 1 (seeds 0) |" in index  # an override run plans no seeds: no "1/0 (+1 extra)"


def test_result_record_contract(tiny):
    assert main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--seeds", "0", "--variant", "k=5")) == 0
    (path,) = results(tiny)
    r = json.loads(path.read_text())
    assert path.name == f"k-5--seed0--{r['config_hash'][:8]}.json"
    for key in ("config", "metrics", "complexity", "timing", "provenance", "seed", "pretrained_backbone"):
        assert key in r
    assert 0 <= r["metrics"]["miou"] <= 1 and len(r["metrics"]["per_class_iou"]) == 5
    assert r["schema"] == 2 and r["status"] == "ok" and r["class_names"][0] == "background"
    head = r["complexity"]["parts"]["head"]
    assert head["weights"] == 2 * 5 * 5 * (16 + 5)
    assert r["complexity"]["total"]["macs"] > head["macs"] > 0
    for key in ("git_commit", "torch", "threads", "date", "device", "calibration_gflops"):
        assert key in r["provenance"]
    code = r["provenance"]["code"]
    assert {
        "seg_core/engine.py::train",
        "seg_core/models/gcn.py::GlobalConvolution",  # k=5's head
        "seg_core/models/gcn.py::PointwiseClassifier",  # the pretraining network's head
        "seg_core/data/synthetic.py::SyntheticShapes",
        "ablations/protocol.py::run",
        "ablations/protocol.py::pretrain_backbone",
    } <= set(code)
    files = {key.split("::")[0] for key in code}
    assert not {"seg_core/models/icnet.py", "ablations/execute.py", "seg_core/registry.py"} & files
    assert "seg_core/models/gcn.py::LargeKernelConv" not in code  # only what shapes the numbers


def test_second_runner_on_the_same_directory_is_refused(tmp_path):
    with directory_lock(tmp_path):
        with pytest.raises(RunnerBusy):
            with directory_lock(tmp_path):
                pass


@pytest.mark.slow
def test_sweep_killed_with_sigkill_recovers_without_lost_duplicated_or_corrupt_results(tmp_path):
    specs = tmp_path / "specs"
    write_tiny_spec(specs, steps=300)  # ~1 s per run, so the kill lands mid-sweep
    killed = {"specs": specs, "results": tmp_path / "killed", "cache": tmp_path / "cache"}
    reference = dict(killed, results=tmp_path / "reference")

    proc = subprocess.Popen(
        [sys.executable, "-m", "ablations", *cli_args(killed, "run", "tiny", "--jobs", "2")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline and len(results(killed)) < 2:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and its pool workers
        proc.wait()
    partial = len(results(killed))
    assert 2 <= partial < 6, f"the kill should land mid-sweep, found {partial} results"

    assert main(cli_args(killed, "run", "tiny", "--jobs", "1")) == 0
    assert main(cli_args(reference, "run", "tiny", "--jobs", "1")) == 0
    got, want = results(killed), results(reference)
    assert [p.name for p in got] == [p.name for p in want] and len(got) == 6
    for a, b in zip(got, want):
        ra, rb = json.loads(a.read_text()), json.loads(b.read_text())  # every file parses
        assert ra["metrics"] == rb["metrics"], a.name  # same numbers as an uninterrupted sweep
    leftovers = [p.name for p in (killed["results"] / "tiny" / "mini").iterdir() if p.name not in {q.name for q in got}]
    assert leftovers in ([], [".lock"]), leftovers  # no temp files, no duplicates
