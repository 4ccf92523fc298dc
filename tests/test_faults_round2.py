"""Issue 32's probe, as tests: the features added since issue 10 under bad input. Each case failed
on the code before its fix (a traceback, exit 0 on an error, or a number from no information)."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import start_long_sweep, write_tiny_spec

from ablations.cli import main as ablations_main
from ablations.schema import RecordError, check_record, load_specs
from report.generate import main as report_main
from report.load import Table
from report.tables import main_table, summarise

ROOT = Path(__file__).resolve().parent.parent


def _committed_record() -> dict:
    path = next(iter(sorted((ROOT / "results" / "gcn-k" / "mini").glob("*.json"))))
    return json.loads(path.read_text())


# -------------------------------------------------------------- E: impossible metrics in records
@pytest.mark.parametrize(
    "key,value,message",
    [
        ("miou", True, "expected a number"),  # `true` used to count as 100%
        ("miou", 7.5, "fraction in [0, 1]"),  # used to print as 750%
        ("pixel_acc", -0.1, "fraction in [0, 1]"),
        ("per_class_iou", [0.5, "x"], "expected a number"),
        ("per_class_iou", [0.5, 1.5], "fraction in [0, 1]"),
        ("postprocess_s", -1.0, "amount >= 0"),
        ("postprocess_s", math.inf, "amount >= 0"),
    ],
)
def test_records_with_impossible_metrics_are_refused_on_load(key, value, message):
    record = _committed_record()
    check_record(copy.deepcopy(record), "r.json")  # the committed record itself is fine
    record["metrics"][key] = value
    with pytest.raises(RecordError, match=re.escape(message)) as err:
        check_record(record, "r.json")
    assert f"metrics.{key}" in str(err.value) and "r.json" in str(err.value)


def test_a_class_without_pixels_may_be_null_or_nan():
    record = _committed_record()
    record["metrics"]["per_class_iou"] = [0.5, None, math.nan]
    assert check_record(record, "r.json") is record


# ------------------------------------------- F: a metric some records lack says n; all lack: says so
def test_a_metric_missing_from_some_records_is_averaged_with_its_n(tmp_path):
    write_tiny_spec(tmp_path)
    text = (
        (tmp_path / "tiny.toml")
        .read_text()
        .replace("x_default = 1\n", 'x_default = 1\ncolumns = ["mean_acc", "pixel_acc"]\n')
    )
    (tmp_path / "tiny.toml").write_text(text)
    (spec,), errors = load_specs(tmp_path)
    assert not errors
    rows = []
    for variant in ("baseline", "k=3", "k=5"):
        for seed in (0, 1, 2):
            metrics = {"miou": 0.3 + seed / 100}
            if seed != 2:
                metrics["mean_acc"] = 0.5  # seed 2's records lack it
            record = {"metrics": metrics, "config": {"data": {"val_images": 16}}}
            rows.append({"variant": variant, "seed": seed, "metrics": metrics, "record": record})
    table = Table(spec=spec, scale="mini", tag="mini", runs=pd.DataFrame(rows), expected=9)
    text = "\n".join(main_table(table, summarise(table)))
    baseline = next(line for line in text.splitlines() if line.startswith("| baseline "))
    assert "50.00 ± 0.00 (n=2 of 3)" in baseline and "not recorded" in baseline  # pixel_acc: in no record
    assert "nan" not in text


# ----------------------------------------------------------- N, T: the report's command line
def test_report_out_must_be_a_folder_and_a_tag_must_have_results(tmp_path, capsys):
    stray = tmp_path / "a-file"
    stray.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_:
        report_main(["--out", str(stray)])
    assert exit_.value.code == 2 and "is not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        report_main(["--tag", "mini+ffffff", "--out", str(tmp_path / "side")])
    assert exit_.value.code == 2 and "no results under that tag" in capsys.readouterr().err
    assert not (tmp_path / "side").exists()  # nothing written


# ------------------------------------------------- U: a blocked text cannot break the index table
def test_a_blocked_reason_with_a_pipe_and_a_newline_stays_in_its_cell(tmp_path):
    from report.generate import generate

    specs = tmp_path / "specs"
    write_tiny_spec(specs)
    text = (specs / "tiny.toml").read_text()
    (specs / "tiny.toml").write_text(text.replace('headline = "k=5"\n', 'headline = "k=5"\nblocked = """a | b\nc"""\n'))
    _, errors = generate(specs, tmp_path / "results", tmp_path / "report")
    assert not errors
    row = next(line for line in (tmp_path / "report" / "index.md").read_text().splitlines() if "(tiny.md)" in line)
    header = next(
        line for line in (tmp_path / "report" / "index.md").read_text().splitlines() if line.startswith("| table")
    )
    assert r"a \| b c" in row and row.count(" | ") == header.count(" | ")


# --------------------------------------------------------------------- Y: plan --tflops inf
def test_plan_refuses_an_infinite_throughput(tmp_path, capsys):
    write_tiny_spec(tmp_path / "specs")
    code = ablations_main(["--specs", str(tmp_path / "specs"), "plan", "tiny", "--tflops", "inf"])
    assert code == 2 and "--tflops" in capsys.readouterr().err


# ----------------------------------------------------- A, M: [study] values name files safely
def _tuned(tmp_path: Path, values: str) -> Path:
    write_tiny_spec(tmp_path)
    path = tmp_path / "tiny.toml"
    path.write_text(path.read_text() + f'\n[study]\nnuisance = {{ "model.head" = {values} }}\n')
    return path


def test_study_values_that_name_the_same_file_are_refused(tmp_path):
    _tuned(tmp_path, '["seg a", "seg-a"]')  # both slug to head-seg-a: each run's file erased the other's
    _, errors = load_specs(tmp_path)
    (error,) = errors
    assert "study.nuisance.model.head" in str(error) and "same file name" in str(error)


def test_a_study_value_too_long_for_a_file_name_is_refused_before_any_work(tmp_path):
    _tuned(tmp_path, f'["{"x" * 300}"]')
    _, errors = load_specs(tmp_path)
    (error,) = errors
    assert "study.nuisance.model.head" in str(error) and "bytes" in str(error)


# -------------------------------------------------------------- O: a very long extends chain
@pytest.mark.slow
def test_an_extends_chain_too_deep_is_one_clear_error(tmp_path):
    write_tiny_spec(tmp_path)
    for i in range(1200):
        (tmp_path / f"b{i}.toml").write_text(f'extends = ["b{i + 1}.toml"]\n' if i < 1199 else "")
    path = tmp_path / "tiny.toml"
    path.write_text('extends = ["b0.toml"]\n' + path.read_text())
    specs, errors = load_specs(tmp_path)  # used to raise RecursionError
    assert any("tiny.toml" in str(e) and "more than 16 bases" in str(e) for e in errors)


# ---------------------------------------------- R: list, show and the report count the same
def test_list_and_show_count_a_tuned_table_as_the_report_does(capsys):
    assert ablations_main(["list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("gcn-k-tuned "))
    assert " 24/24 " in row  # (variant, seed) pairs; `list` said 24/96 (one file per trial)
    assert ablations_main(["show", "gcn-k-tuned"]) == 0
    assert "results at mini: 24/24 (variant, seed) pairs" in capsys.readouterr().out


# ------------------------------------------------- Q: a variant whose runs failed is not "not run"
def test_a_variant_whose_runs_failed_is_called_failed(tmp_path):
    from report.checks import judge_all

    write_tiny_spec(tmp_path)
    (spec,), _ = load_specs(tmp_path)
    rows = [
        {
            "variant": v,
            "seed": s,
            "metrics": {"miou": 0.3},
            "record": {"metrics": {"miou": 0.3}, "config": {"data": {"val_images": 16}}},
        }
        for v in ("baseline", "k=3")
        for s in (0, 1)
    ]
    failures = [{"variant": "k=5", "seed": s, "reason": "diverged at step 3"} for s in (0, 1)]
    table = Table(spec=spec, scale="mini", tag="mini", runs=pd.DataFrame(rows), failed=failures, expected=6)
    paper = {v.name: v.paper for v in spec.variants}
    pairwise, ordering = judge_all(spec.report["checks"], spec.metric, paper, table.runs, {"k=5"})
    assert pairwise.outcome == "incomplete" and pairwise.missing == "k=5 failed"  # was "k=5 not run"
    assert ordering.missing == "1 of 3 variants without results (1 failed, 0 not run)"
    text = "\n".join(main_table(table, summarise(table)))
    assert " failed |" in next(line for line in text.splitlines() if line.startswith("| k=5 "))


# ---------------------------------------------------------------- P: SIGTERM says one line, 143
@pytest.mark.slow
def test_sigterm_shuts_down_as_ctrl_c_does_and_exits_143(tmp_path):
    import signal
    import subprocess
    import time

    files = lambda: list((tmp_path / "results").rglob("*.json"))  # noqa: E731
    proc, _ = start_long_sweep(tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not files():
        time.sleep(0.05)
    assert len(files()) < 6, "the sweep ended before SIGTERM could reach it: give the runs more steps"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err  # was 143 with nothing said
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("terminated (SIGTERM): "), err
    for p in files():
        json.loads(p.read_text())  # what was written is complete


# -------------------------------------------------- G: workers die with a killed parent sweep
def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":  # ppid, and not a zombie
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_a_killed_parallel_sweep_leaves_no_process_behind(tmp_path):
    import signal
    import subprocess
    import time

    proc, _ = start_long_sweep(tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2:  # the two pool workers (and a resource tracker)
        time.sleep(0.2)
        workers = [c for c in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(workers) >= 2, "the pool's workers never started"
    children = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 20
    while time.time() < deadline and any(map(_alive, children)):
        time.sleep(0.2)
    assert not [c for c in children if _alive(c)], "workers outlived their killed parent"  # they used to run on


# ------------------------------------------- Z: a missing file names the lists it came from
def test_a_missing_sbd_image_names_the_lists_train_aug_is_built_from(tmp_path):
    from paper_trees import write_voc_sbd

    from seg_core.data.checks import DataError
    from seg_core.data.voc import verify_voc

    root = write_voc_sbd(tmp_path / "voc")
    (root / "SBD" / "img" / "s2.jpg").unlink()
    with pytest.raises(DataError) as err:
        verify_voc({"root": str(root), "label_cache": str(tmp_path / "cache")}, ["train"])
    message = str(err.value)
    assert "s2.jpg" in message and "SBD's train.txt" in message  # not "train_aug.txt", a file that does not exist
    assert "train_aug.txt" not in message


# ----------------------------------------- V: slurm.toml values blamed on the file, mem_gb checked
@pytest.mark.parametrize(
    "line,key", [("time_min = 0", "time_min"), ("mem_gb = -1", "mem_gb"), ("cpus_per_gpu = 0", "cpus_per_gpu")]
)
def test_a_bad_slurm_setting_is_blamed_on_the_file_that_set_it(tmp_path, line, key):
    from ablations.cluster import load_settings
    from ablations.schema import SpecError

    config = tmp_path / "slurm.toml"
    config.write_text(line + "\n")
    flags = {"partition": None, "account": None, "gpus_per_run": None, "time_min": None, "folder": None}
    with pytest.raises(SpecError) as err:
        load_settings(flags, config)  # every flag present, none given (as the CLI passes them)
    assert str(config) in str(err.value) and key in str(err.value) and "<command line>" not in str(err.value)
    if key == "time_min":  # a flag that sets it is blamed instead, and one that fixes it wins
        with pytest.raises(SpecError, match="<command line>"):
            load_settings(dict(flags, time_min=-5), config)
        assert load_settings(dict(flags, time_min=30), config).time_min == 30


# ------------------------------------------------ K: a full disk: one line, exit 3, no partial file
def _no_space(path):
    import errno

    return OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.mark.parametrize("where", ["trunk", "record"])
def test_a_full_disk_is_one_line_exit_3_and_leaves_no_partial_file(tiny, monkeypatch, capsys, where):
    import os

    import torch
    from conftest import cli_args

    if where == "trunk":  # the pretrained trunk's file, half written
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            real_save(obj, f, *args, **kwargs)
            raise _no_space(f)

        monkeypatch.setattr(torch, "save", save)
    else:  # every other write (the trunk's metadata, the result record) fails at fsync

        def fsync(fd):
            raise _no_space("a file")

        monkeypatch.setattr(os, "fsync", fsync)
    code = ablations_main(cli_args(tiny, "run", "tiny", "--jobs", "1", "--seeds", "0", "--variant", "k=3"))
    err = capsys.readouterr().err
    assert code == 3, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0] and "Traceback" not in err
    left = [p for d in (tiny["cache"], tiny["results"]) if d.exists() for p in d.rglob("*") if p.is_file()]
    assert not [p for p in left if "tmp" in p.name], left
    assert not list(tiny["results"].rglob("*.json"))


# ------------------------- J2: CUDA asked on a host without it, data.root on a generated dataset
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a host without CUDA")
def test_cuda_on_a_host_without_it_is_refused_at_dry_run(tiny, capsys):
    from conftest import cli_args

    code = ablations_main(cli_args(tiny, "run", "tiny", "--dry-run", "train.device=cuda"))
    err = capsys.readouterr().err
    assert code == 2 and "<command line>: train.device" in err and "no CUDA device" in err
    assert not tiny["results"].exists() and not tiny["cache"].exists()


def test_a_root_for_a_generated_dataset_is_refused_at_dry_run(tiny, capsys):
    from conftest import cli_args

    code = ablations_main(cli_args(tiny, "run", "tiny", "--dry-run", "data.root=/data/x"))
    err = capsys.readouterr().err
    assert code == 2 and "data.root" in err and "'shapes' is generated" in err


# ------------------------------------------------- L: --executor slurm where there is no Slurm
def test_slurm_without_slurm_is_refused_before_any_work(tiny, capsys, monkeypatch):
    import shutil

    from conftest import cli_args

    pytest.importorskip("submitit")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    code = ablations_main(cli_args(tiny, "run", "tiny", "--executor", "slurm"))
    err = capsys.readouterr().err
    assert code == 2 and "no Slurm on this machine (sbatch, squeue not on PATH)" in err
    assert not tiny["cache"].exists() and not tiny["results"].exists()  # nothing pretrained, nothing written


# ------------------------------ H, I: damaged VOC / SBD / Cityscapes files are named before any run
def _verify(name: str, root: Path):
    from seg_core.registry import DATASETS

    return DATASETS.metadata(name)["verify"]({"root": str(root)}, ["train", "val"])


@pytest.mark.parametrize(
    "damage",
    ["truncated label", "non-image jpg", "mat not a mat", "mat missing", "mat without GTcls"],
)
def test_a_damaged_voc_or_sbd_file_is_a_data_error_naming_it(tmp_path, damage):
    from paper_trees import write_voc_sbd
    from scipy.io import savemat

    from seg_core.data.checks import DataError

    root = write_voc_sbd(tmp_path / "VOC")
    base = root / "VOCdevkit" / "VOC2012"
    culprit = {
        "truncated label": base / "SegmentationClass" / "v1.png",
        "non-image jpg": base / "JPEGImages" / "v2.jpg",
        "mat not a mat": root / "SBD" / "cls" / "s1.mat",
        "mat missing": root / "SBD" / "cls" / "s1.mat",
        "mat without GTcls": root / "SBD" / "cls" / "s1.mat",
    }[damage]
    if damage == "truncated label":
        culprit.write_bytes(culprit.read_bytes()[:60])
    elif damage in ("non-image jpg", "mat not a mat"):
        culprit.write_text("not what the name says")
    elif damage == "mat missing":
        culprit.unlink()
    else:
        savemat(culprit, {"Other": [1]})
    with pytest.raises(DataError) as err:
        _verify("voc2012", root)
    assert err.value.path == culprit, str(err.value)


@pytest.mark.parametrize("damage", ["truncated image", "stray file"])
def test_a_damaged_or_stray_cityscapes_file_is_a_data_error_naming_it(tmp_path, damage):
    pytest.importorskip("cityscapesscripts")
    from paper_trees import write_cityscapes

    from seg_core.data.checks import DataError

    root = write_cityscapes(tmp_path / "cs")
    city = root / "leftImg8bit" / "train" / "bremen"
    if damage == "truncated image":
        culprit = sorted(city.glob("*.png"))[0]
        culprit.write_bytes(culprit.read_bytes()[:200])
    else:
        culprit = city / "notes.txt"
        culprit.write_text("a stray file")
    with pytest.raises(DataError) as err:
        _verify("cityscapes", root)
    assert err.value.path == culprit, str(err.value)


# ------------------------------------------ C: the SBD label cache follows its .mat, errors name it
def test_an_edited_sbd_label_is_converted_again_and_a_bad_one_is_named(tmp_path):
    import os

    import numpy as np
    from paper_trees import write_voc_sbd
    from scipy.io import savemat

    from seg_core.data.checks import DataError
    from seg_core.data.voc import read_label
    from seg_core.registry import DATASETS

    root = write_voc_sbd(tmp_path / "VOC")
    mat = root / "SBD" / "cls" / "s1.mat"

    def s1_label():
        data = DATASETS.build("voc2012", split="train", num_images=4, root=str(root))
        (label,) = [lb for image, lb in data._pairs if image.stem == "s1"]
        return label, read_label(label)

    path, before = s1_label()
    segmentation = np.full(before.shape, 3, dtype=np.uint8)
    savemat(mat, {"GTcls": {"Segmentation": segmentation, "CategoriesPresent": [3]}})
    os.utime(mat, ns=(os.stat(mat).st_atime_ns, os.stat(mat).st_mtime_ns + 10**9))  # a later edit
    again, after = s1_label()
    assert again != path and not path.exists() and after.unique().tolist() == [3]  # re-converted, old one gone
    segmentation[0, 0] = 99
    savemat(mat, {"GTcls": {"Segmentation": segmentation, "CategoriesPresent": [3]}})
    os.utime(mat, ns=(os.stat(mat).st_atime_ns, os.stat(mat).st_mtime_ns + 2 * 10**9))
    with pytest.raises(DataError) as err:
        s1_label()
    assert err.value.path == mat and "99" in err.value.message


# --------------------------- J1: evaluation options are checked before training, not after it
@pytest.mark.parametrize(
    "override,message",
    [
        ('eval.inference={type="slide"}', "eval.inference.crop: missing required key"),
        ('eval.inference={type="multiscale",scales=[]}', "eval.inference.scales: expected positive scale factors"),
        ('eval.inference={type="slide",crop=[16,16],stride=[0,0]}', "eval.inference.crop: expected crop and stride"),
        ('eval.inference={type="slide",crop=[16,16],stride=[8,8],pad=1}', "eval.inference.pad: unknown key"),
        ('eval.inference={type="multiscale",inner={type="slide",crop=[8,8]}}', "eval.inference.inner.stride: missing"),
        ("eval.band_width=1e9", "eval.band_width: 1000000000.0 px is wider than the 32x32 image's diagonal"),
    ],
)
def test_bad_evaluation_options_are_refused_before_training(tiny, capsys, override, message):
    from conftest import cli_args

    code = ablations_main(cli_args(tiny, "run", "tiny", "--dry-run", override))
    err = capsys.readouterr().err
    assert code == 2 and f"<command line>: {message}" in err, err
    good = 'eval.inference={type="slide",crop=[16,16],stride=[8,8]}'
    assert ablations_main(cli_args(tiny, "run", "tiny", "--dry-run", good)) == 0


def _returned_codes(tree) -> set[int]:
    """Every exit status a module's functions can return: integer constants in ``return``
    statements (an ``a if c else b`` included), module constants they name, and the integers a
    returned local variable is assigned from (``how, code = (..., 143) if ... else (..., 130)``)."""
    import ast

    constants = {
        t.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, int)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    ints = lambda node: {  # noqa: E731
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and type(n.value) is int
    }
    codes: set[int] = set()
    for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        assigned: dict[str, set[int]] = {}
        for node in ast.walk(function):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    for name in (n.id for n in ast.walk(target) if isinstance(n, ast.Name)):
                        assigned.setdefault(name, set()).update(ints(node.value))
        for node in ast.walk(function):
            if isinstance(node, ast.Return) and node.value is not None:
                if isinstance(node.value, ast.Name):
                    codes |= (
                        {constants[node.value.id]} if node.value.id in constants else assigned.get(node.value.id, set())
                    )
                elif not isinstance(node.value, ast.Call):  # a call returns another function's code
                    codes |= ints(node.value)
    return codes


def test_the_readme_exit_code_table_covers_every_code_the_cli_returns():
    """Issue 32: the README's table lists exactly the statuses `python -m ablations` can return
    (read from the CLI's code, argparse's usage error 2 included) and says what each means."""
    import ast

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    section = readme.split("## Exit codes of `python -m ablations`", 1)[1].split("\n## ", 1)[0]
    table = {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| (.+) \|$", section, re.M)}
    returned = _returned_codes(ast.parse((root / "ablations" / "cli.py").read_text())) | {2}  # argparse: 2
    assert returned == set(table), (returned, set(table))
    assert {0, 1, 2, 3, 130, 143} <= set(table) and all(len(text.split()) >= 3 for text in table.values())


# ------------------------------ X: the same submit command while its tasks still run submits nothing
def test_a_slurm_resubmit_skips_runs_whose_jobs_squeue_still_lists(tmp_path, monkeypatch):
    import subprocess

    from ablations import cluster

    runs = [{"path": tmp_path / f"r{i}.json"} for i in range(3)]
    jobs = [type("Job", (), {"job_id": f"77_{i}"})() for i in range(3)]
    cluster.record_submission(str(tmp_path / "jobs"), jobs, runs, "slurm")
    asked = []

    def squeue(command, **kwargs):
        asked.append(command)
        listing = "77_0 RUNNING\n77_1 PENDING\n77_2 COMPLETED\n"  # 77_2 done (or failed): resubmit it
        return subprocess.CompletedProcess(command, 0, stdout=listing, stderr="")

    monkeypatch.setattr(subprocess, "run", squeue)
    active = cluster.still_active(runs, str(tmp_path / "jobs"))
    assert active == {str(runs[0]["path"]): "77_0", str(runs[1]["path"]): "77_1"}
    assert asked and asked[0][:2] == ["squeue", "-h"] and "77_0,77_1,77_2" in asked[0]
    assert cluster.still_active([{"path": tmp_path / "other.json"}], str(tmp_path / "jobs")) == {}  # never submitted


@pytest.mark.slow
def test_running_the_same_submitit_command_again_while_its_tasks_run_submits_nothing(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from conftest import cli_args

    pytest.importorskip("submitit")
    specs = tmp_path / "specs"
    write_tiny_spec(specs, steps=1_000_000)  # runs until the test stops it
    t = {"specs": specs, "results": tmp_path / "results", "cache": tmp_path / "cache"}
    folder = tmp_path / "jobs"
    command = [sys.executable, "-m", "ablations", *cli_args(t, "run", "tiny", "--seeds", "0", "--variant", "k=3")]
    command += ["--executor", "submitit-local", "--slurm-folder", str(folder)]
    root = Path(__file__).resolve().parent.parent

    def submit(name: str) -> tuple[int, str, str]:
        # output to files, not pipes: the local task inherits them and keeps a pipe open while it runs
        out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with out.open("w") as o, err.open("w") as e:
            code = subprocess.run(command, stdout=o, stderr=e, cwd=root, timeout=600).returncode
        return code, out.read_text(), err.read_text()

    code, out, err = submit("first")
    ledger = json.loads((folder / "segbench-submitted.json").read_text())
    try:
        assert code == 0 and "submitted 1 runs" in out, err[-2000:]
        code, out, err = submit("again")
        assert code == 0, err[-2000:]
        assert "still queued or running from an earlier submission" in err and "submitted" not in out
        assert len(json.loads((folder / "segbench-submitted.json").read_text())) == 1
    finally:  # stop the task: the controller and what it started
        for entry in ledger.values():
            for pid in [*_descendants(int(entry["job_id"])), int(entry["job_id"])]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _descendants(pid: int) -> list[int]:
    return [d for child in _children(pid) for d in (child, *_descendants(child))]
