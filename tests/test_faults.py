"""Bad input and faults: nothing lost, nothing invented, one clear line for every mistake.

Each numbered case of the "bad input and faults" review is a test here: the exit status (2 for
bad input before anything runs, 1 for run failures with a summary, 130 for Ctrl-C), the message
names the file, key and value, and no result is lost, duplicated or mixed.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SPEC, cli_args, start_long_sweep, write_tiny_spec
from PIL import Image

from ablations.cli import main
from report.generate import generate
from report.generate import main as report_main

ROOT = Path(__file__).resolve().parent.parent


def _files(t, tag="mini", spec="tiny"):
    return sorted((t["results"] / spec / tag).glob("*.json"))


def _edit(t, old, new, name="tiny.toml"):
    path = t["specs"] / name
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _run(t, *args):
    return main(cli_args(t, "run", "tiny", "--jobs", "1", *args))


def _page(t):
    written, errors = generate(t["specs"], t["results"], t["root"] / "report")
    return (t["root"] / "report" / "tiny.md").read_text(), (t["root"] / "report" / "index.md").read_text(), errors


# ----------------------------------------------------------------- results lost or mixed
@pytest.mark.slow
def test_1_a_second_spec_file_with_the_same_id_is_refused(tiny, capsys):
    shutil.copy(tiny["spec"], tiny["specs"] / "tiny-copy.toml")  # id "tiny" in tiny-copy.toml
    assert main(cli_args(tiny, "list")) == 2
    err = capsys.readouterr().err
    assert "tiny-copy.toml: id: expected the file's name ('tiny-copy')" in err
    assert main(cli_args(tiny, "run", "tiny-copy")) == 2
    assert not tiny["results"].exists()
    _, index, errors = _page(tiny)
    assert any("tiny-copy.toml" in e for e in errors) and "tiny-copy.toml" in index


def test_2_an_overlong_variant_name_is_refused_before_training(tiny, capsys):
    _edit(tiny, 'name = "k=5"', f'name = "{"k" * 303}"')
    assert main(cli_args(tiny, "run", "tiny", "--dry-run")) == 2
    assert "variants[2].name: name gives a file slug of 303 characters; at most 64" in capsys.readouterr().err
    assert not tiny["results"].exists()


def test_3_unwritable_results_fail_before_training_and_a_no_op_takes_no_lock(tiny, capsys):
    blocker = tiny["results"] / "tiny"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")  # results/tiny cannot hold results (root ignores permission bits)
    assert _run(tiny) == 2
    assert "cannot hold results" in capsys.readouterr().err
    assert not tiny["cache"].exists()  # nothing was pretrained or trained
    blocker.unlink()
    assert _run(tiny, "--seeds", "0", "--variant", "baseline") == 0
    (tiny["results"] / "tiny" / "mini" / ".lock").unlink()
    assert _run(tiny, "--seeds", "0", "--variant", "baseline") == 0
    assert not (tiny["results"] / "tiny" / "mini" / ".lock").exists()  # nothing to run: no lock taken


def test_4_the_report_uses_exactly_the_current_configs_and_lists_the_others_as_stale(tiny):
    assert _run(tiny, "--variant", "k=3") == 0  # seeds 0 and 1
    _edit(tiny, "lr = 0.01", "lr = 0.02")
    assert _run(tiny, "--variant", "k=3", "--seeds", "0") == 0  # only seed 0 at the new lr
    stale_seed1 = next(p for p in _files(tiny) if "seed1" in p.name)
    fresh = next(p for p in _files(tiny) if "seed0" in p.name)
    shutil.copy(fresh, fresh.with_name("k-3--seed0--deadbeef.json"))  # a hand-made duplicate
    page, index, _ = _page(tiny)
    row = next(line for line in page.splitlines() if line.startswith("| k=3 "))
    assert "(n=1)" in row  # seed 1 at the old lr is not averaged in
    assert "stale results, not used:** 2 file(s)" in page and stale_seed1.name in page and "deadbeef" in page
    assert "1/6" in index


def test_5_one_normalisation_of_variant_names(tiny):
    _edit(tiny, 'name = "k=5"', 'name = "  k=5 "')
    assert _run(tiny, "--variant", " k=5") == 0
    page, _, _ = _page(tiny)
    row = next(line for line in page.splitlines() if line.startswith("| k=5 "))
    assert "(n=2)" in row


# ---------------------------------------------------------------- verdicts from missing data
@pytest.mark.slow
def test_6_a_verdict_needs_its_data(tiny):
    assert _run(tiny, "--variant", "baseline", "--variant", "k=3") == 0
    page, index, _ = _page(tiny)
    assert "## Verdict: incomplete" in page and "incomplete (k=5 not run)" in page  # the claim says what is missing
    assert not re.search(r"\bnan\b", page + index)  # no number made up from missing data
    line = next(line for line in index.splitlines() if "(tiny.md)" in line)
    assert "**incomplete**" in line and "2 incomplete" in line and "runs 4/6" in line


@pytest.mark.slow
def test_7_a_diverging_run_is_recorded_as_failed_and_the_sweep_goes_on(tiny, capsys):
    _edit(
        tiny,
        'name = "k=3"\nmodel = { head = "gcn", k = 3 }',
        'name = "k=3"\nmodel = { head = "gcn", k = 3 }\ntrain.lr = 1e12',
    )
    assert _run(tiny) == 1
    err = capsys.readouterr().err
    assert "2 failed" in err and "k=3 seed 0: diverged at step" in err
    records = [json.loads(p.read_text()) for p in _files(tiny)]
    assert sorted(r["status"] for r in records) == ["failed"] * 2 + ["ok"] * 4
    assert all(r["failure"]["reason"] == "diverged" for r in records if r["status"] == "failed")
    page, _, _ = _page(tiny)
    assert "**failed:** k=3, seed 0: diverged at step" in page
    assert _run(tiny) == 1 and "all done (2 failed" in capsys.readouterr().err  # not silently retried


# ------------------------------------------------ accepted by validation, then crashing
@pytest.mark.parametrize(
    "args,where,words",
    [
        (["--variant", "k=5", "model.k=1001"], "<command line>: model.k", "extent 1001 is beyond 2 x 8 - 1"),
        (["--variant", "k=5", "model.k=17"], "<command line>: model.k", "extent 17 is beyond 2 x 8 - 1"),
        (["pretrain.steps=0"], "pretrain.steps", "expected >= 1"),
        (["pretrain.images=0"], "pretrain.images", "expected >= 1"),
        (["pretrain.lr=0"], "pretrain.lr", "expected > 0"),
        (["pretrain.batch_size=0"], "pretrain.batch_size", "expected >= 1"),
        (["eval.batch_size=0"], "eval.batch_size", "expected >= 1"),
        (["--seeds", str(2**64)], "--seeds", "distinct integers in [0, 4294967295]"),
        (
            ["model.backbone_options.output_stride=3"],
            "model.backbone_options.output_stride",
            "expected one of [1, 2, 4]",
        ),
        (
            ['train.loss={a={type="cross_entropy",output="aux"}}'],
            "train.loss",
            "output 'aux', which model 'single_head' does not produce",
        ),
        (["--variant", "k=5", "model.k.x=1"], "<command line>: model.k.x", "is 5, not a table"),
        (["--variant", "baseline", "model.k.x=1"], "<command line>: model.k.x", "expected an integer, got {'x': 1}"),
        (["train.batch_size=100"], "train.batch_size", "at most data.train_images (48)"),
        (["train.lr=-1"], "<command line>: train.lr", "expected a learning rate > 0"),
        (["train.steps=2", "train.steps=3"], "train.steps", "given twice"),
    ],
)
def test_8_9_bad_values_are_refused_at_dry_run(tiny, capsys, args, where, words):
    assert main(cli_args(tiny, "run", "tiny", "--dry-run", *args)) == 2
    err = capsys.readouterr().err
    assert where in err and words in err, err
    assert not tiny["results"].exists() and not tiny["cache"].exists()


@pytest.mark.slow
def test_9_a_native_crash_would_still_say_where():
    from ablations import runner

    code = "import faulthandler, sys; from ablations.runner import _enable_faulthandler; _enable_faulthandler(); print(faulthandler.is_enabled())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True" and runner._attempt.__doc__


def test_10_a_broken_spec_file_is_flagged_and_the_others_go_on(tiny, capsys):
    (tiny["specs"] / "folder.toml").mkdir()
    (tiny["specs"] / "broken.toml").write_text('id = "broken"\ntitle = ')
    assert main(cli_args(tiny, "list")) == 2
    captured = capsys.readouterr()
    assert "tiny " in captured.out
    assert (
        "folder.toml: <file>: is a directory" in captured.err and "broken.toml: <toml>: not valid TOML" in captured.err
    )
    assert (
        report_main(
            ["--specs", str(tiny["specs"]), "--results", str(tiny["results"]), "--out", str(tiny["root"] / "r")]
        )
        == 2
    )
    index = (tiny["root"] / "r" / "index.md").read_text()
    assert "broken.toml" in index and "folder.toml" in index and "[Tiny GCN sweep](tiny.md)" in index


@pytest.mark.slow
@pytest.mark.parametrize("content", ["{}", "[]", "null", '{"schema": 2, "status": "ok"}', "\x00\x01"])
def test_11_a_result_file_that_is_not_a_result(tiny, capsys, content):
    assert _run(tiny, "--variant", "baseline", "--seeds", "0") == 0
    (path,) = _files(tiny)
    path.write_text(content)
    out = tiny["root"] / "r"
    assert report_main(["--specs", str(tiny["specs"]), "--results", str(tiny["results"]), "--out", str(out)]) == 2
    assert f"{path}" in (err := capsys.readouterr().err) and "delete it and re-run" in err
    assert not out.exists()  # nothing half-written
    assert _run(tiny, "--variant", "baseline", "--seeds", "0") == 0
    assert "is not a complete result (corrupt or truncated); it will be replaced" in capsys.readouterr().err
    assert json.loads(path.read_text())["status"] == "ok"


@pytest.mark.parametrize("suffix", [".pt", ".json"])
def test_12_a_truncated_pretraining_cache_is_named_and_rebuilt(tiny, capsys, suffix):
    assert _run(tiny, "--variant", "baseline", "--seeds", "0") == 0
    (cached,) = (tiny["cache"] / "pretrained").glob(f"*{suffix}")
    cached.write_bytes(cached.read_bytes()[:40])
    shutil.rmtree(tiny["results"])
    assert _run(tiny, "--variant", "baseline", "--seeds", "0") == 0
    err = capsys.readouterr().err
    assert "pretrained backbone cache damaged, pretraining again" in err and cached.stem in err


# ------------------------------------------------------------------ paper-scale data
VOC_SPEC = (
    TINY_SPEC.replace(
        "[scales.mini]",
        """[scales.paper]
seeds = [0]

[scales.paper.model]
backbone = "mini_resnet"
backbone_options = { stem_width = 8, widths = [8, 16, 16], strides = [1, 2, 2] }

[scales.paper.data]
name = "voc2012"
root = "{root}"
crop_size = 32
train_list = "train"  # VOC train alone (train_aug needs SBD)
train_images = 2
val_images = 2

[scales.paper.train]
steps = 2
batch_size = 2
lr = 0.01

[scales.mini]""",
        1,
    )
    .replace("{steps}", "4")
    .replace("{{", "{")
    .replace("}}", "}")
)


def _voc(root, size=(20, 30), label_value=15, n=3):
    base = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.zeros((*size, 3), dtype=np.uint8)).save(base / "JPEGImages" / f"im{i}.jpg")
        label = np.zeros(size, dtype=np.uint8)
        label[5:10, 5:10] = label_value
        Image.fromarray(label, mode="L").save(base / "SegmentationClass" / f"im{i}.png")
    for split in ("train", "val"):
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(f"im{i}" for i in range(n)) + "\n")
    return base


@pytest.mark.parametrize(
    "fault,words",
    [
        ("missing root", "no VOCdevkit/VOC2012 here; expected the layout"),
        ("label 77", "label value(s) [77] outside the 21 classes and 255"),
        ("missing jpeg", "im1.jpg: missing (listed in train.txt)"),
        ("size mismatch", "label is 30x20, its image 31x20"),
        ("rgb label", "label image in mode RGB"),
        ("empty list", "train.txt: the split list is empty"),
    ],
)
def test_13_a_bad_dataset_fails_before_training_naming_the_file(tiny, capsys, fault, words):
    root = tiny["root"] / "voc"
    if fault != "missing root":
        base = _voc(root, label_value=77 if fault == "label 77" else 15)
        if fault == "missing jpeg":
            (base / "JPEGImages" / "im1.jpg").unlink()
        if fault == "size mismatch":
            Image.fromarray(np.zeros((20, 31, 3), dtype=np.uint8)).save(base / "JPEGImages" / "im2.jpg")
        if fault == "rgb label":
            Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(base / "SegmentationClass" / "im0.png")
        if fault == "empty list":
            (base / "ImageSets" / "Segmentation" / "train.txt").write_text("")
    tiny["spec"].write_text(VOC_SPEC.replace("{root}", str(root)))
    assert main(cli_args(tiny, "run", "tiny", "--scale", "paper", "--jobs", "1")) == 2
    assert words in capsys.readouterr().err
    assert not (tiny["results"] / "tiny" / "paper").exists() and not tiny["cache"].exists()  # no lock, no page


def test_13_a_relative_data_root_is_the_projects():
    from ablations.protocol import ROOT as PROJECT
    from ablations.protocol import dataset_kwargs

    assert dataset_kwargs({"name": "voc2012", "root": "data/VOC", "train_images": 1, "val_images": 1})["root"] == str(
        PROJECT / "data" / "VOC"
    )
    assert "/data/" in (ROOT / ".gitignore").read_text().splitlines()


@pytest.mark.slow
def test_14_ctrl_c_says_one_line_and_exits_130(tmp_path):
    """Ctrl-C reaching a running sweep. The child starts with SIGINT at its default action: a shell
    without job control starts background commands with SIGINT ignored, Python then keeps it
    ignored (as it should: the shell meant it), and a CI started that way would see the sweep run
    to its end (exit 0). 2,000 steps keep the remaining runs going well after the first file."""
    proc, t = start_long_sweep(
        tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(_files(t)) < 1:
        time.sleep(0.05)
    assert len(_files(t)) < 6, "the sweep ended before Ctrl-C could reach it: give the runs more steps"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines() and err.strip().splitlines()[-1].startswith("interrupted: "), err
    assert "runs done; run again to resume" in err and "warn" not in err.lower(), err
    for p in _files(t):
        json.loads(p.read_text())  # what was written is complete


# ------------------------------------------------------------------------ smaller
def test_smaller_cases(tiny, capsys):
    _edit(tiny, 'name = "k=5"', 'name = "ψψ"')
    assert main(cli_args(tiny, "run", "tiny", "--dry-run")) == 2
    assert "has no ASCII letter or digit" in capsys.readouterr().err
    write_tiny_spec(tiny["specs"])
    _edit(tiny, 'name = "k=5"', 'name = "k=5 | 7"')
    assert main(cli_args(tiny, "run", "tiny", "--dry-run")) == 2
    assert "without '|'" in capsys.readouterr().err
    write_tiny_spec(tiny["specs"])
    assert main(cli_args(tiny, "show", "tiny", "--scale", "huge")) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "no scale 'huge'" in captured.err  # nothing printed before the error
    assert _run(tiny, "--variant", "baseline", "--seeds", "0") == 0
    (path,) = _files(tiny)
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_list_is_quick_with_the_committed_specs_and_results():
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "ablations", "list"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    elapsed = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    assert "gcn-k" in out.stdout and elapsed < 3  # reads spec and result files only: 0.14 s measured here


# ------------------------------------------------------------------------ fault injection
@pytest.mark.slow
def test_fault_injection_keeps_every_healthy_result_and_says_what_failed(tiny):
    """One run diverges, one result file is corrupted, the pretraining cache is truncated; then the
    sweep is run again: every healthy result survives byte-identical, the rest is redone, and the
    page says exactly which runs failed and why."""
    _edit(
        tiny,
        'name = "k=3"\nmodel = { head = "gcn", k = 3 }',
        'name = "k=3"\nmodel = { head = "gcn", k = 3 }\ntrain.lr = 1e12',
    )
    assert _run(tiny) == 1
    files = _files(tiny)
    healthy = {p.name: p.read_bytes() for p in files if json.loads(p.read_text())["status"] == "ok"}
    corrupt = next(p for p in files if p.name.startswith("k-5--seed1"))
    corrupt.write_text('{"schema": 2')
    del healthy[corrupt.name]
    (weights,) = (tiny["cache"] / "pretrained").glob("*.pt")
    weights.write_bytes(weights.read_bytes()[:100])
    assert _run(tiny) == 1  # the diverged runs stay failed (not retried without --retry-failed)
    after = {p.name: p.read_bytes() for p in _files(tiny)}
    assert all(after[name] == data for name, data in healthy.items())  # byte-identical
    assert json.loads(corrupt.read_text())["status"] == "ok" and len(after) == 6
    page, index, _ = _page(tiny)
    assert page.count("**failed:** k=3") == 2 and "diverged at step" in page
    assert "4/6, 2 failed" in index


def test_evaluation_options_a_model_does_not_take_are_refused_before_training(tiny, capsys):
    assert main(cli_args(tiny, "run", "tiny", "--dry-run", "eval.model.output_stride=8")) == 2
    assert (
        "<command line>: eval.model.output_stride: SingleHeadSegmenter cannot be reconfigured"
        in capsys.readouterr().err
    )
