"""``--scale paper`` end to end on tiny trees in the real dataset layouts (tests/paper_trees.py):
VOC 2012 + SBD and Cityscapes loading, ImageNet weights from the local torch hub cache, a trunk
checkpoint, results and report, ``plan``, data-parallel runs under torchrun, submitit's local
executor, and the errors a user meets first (bad roots, missing weights, unknown labels, Slurm
without submitit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import needs_crf, needs_paper
from paper_trees import (
    TINY_GCN_PAPER,
    TINY_GSCNN_PAPER,
    TINY_ICNET_PAPER,
    fake_imagenet_weights,
    tiny_specs,
    write_cityscapes,
    write_voc_sbd,
)
from PIL import Image

from ablations.cli import main
from seg_core.data.checks import DataError
from seg_core.registry import DATASETS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


# ------------------------------------------------------------------------------- datasets
def test_train_aug_is_voc_train_plus_sbd_minus_voc_val_with_mat_labels_converted_once(tmp_path):
    from scipy.io import loadmat

    root = write_voc_sbd(tmp_path / "voc")
    ds = DATASETS.build("voc2012", split="train", root=str(root), crop_size=64)
    names = [image.stem for image, _ in ds._pairs]
    assert names == ["v1", "v2", "s1", "s2", "s3"]  # v3 is VOC val: left out though SBD lists it
    (cached,) = (root / "segbench-cache" / "SegmentationClassAug").glob("s1--*.png")  # named by its .mat's size, mtime
    expected = loadmat(root / "SBD" / "cls" / "s1.mat")["GTcls"][0]["Segmentation"][0]
    assert np.array_equal(np.array(Image.open(cached)), expected)
    stamp = cached.stat().st_mtime_ns
    DATASETS.build("voc2012", split="train", root=str(root), crop_size=64)
    assert cached.stat().st_mtime_ns == stamp  # converted once
    item = ds.get(2, torch.Generator().manual_seed(0))
    assert item["image"].shape == (3, 64, 64) and item["label"].shape == (64, 64)
    val = DATASETS.build("voc2012", split="val", root=str(root), crop_size=64)
    assert [i.stem for i, _ in val._pairs] == ["v3", "v4"]


def test_a_label_value_outside_the_classes_names_the_file(tmp_path):
    root = write_voc_sbd(tmp_path / "voc")
    bad = root / "VOCdevkit/VOC2012/SegmentationClass/v4.png"
    label = np.array(Image.open(bad))
    label[0, 0] = 42
    Image.fromarray(label, mode="L").save(bad)
    from seg_core.data.voc import verify_voc

    with pytest.raises(DataError, match=r"v4\.png.*\[42\]"):
        verify_voc({"root": str(root)}, ["train", "val"])


@needs_paper
def test_cityscapes_label_ids_map_to_train_ids_by_the_official_table(tmp_path):
    from cityscapesscripts.helpers.labels import labels

    from seg_core.data.cityscapes import CITYSCAPES_CLASSES, label_table, read_train_ids

    names, lut = label_table()
    assert names == CITYSCAPES_CLASSES
    assert [int(lut[i]) for i in (7, 8, 26, 0, 1)] == [0, 1, 13, 255, 255]  # road, sidewalk, car; void ids
    assert all(int(lut[lb.id]) == (lb.trainId if 0 <= lb.trainId < 255 else 255) for lb in labels if lb.id >= 0)
    path = tmp_path / "x_gtFine_labelIds.png"
    Image.fromarray(np.array([[7, 40]], dtype=np.uint8), mode="L").save(path)
    with pytest.raises(DataError, match=r"x_gtFine_labelIds\.png.*\[40\]"):
        read_train_ids(path)
    root = write_cityscapes(tmp_path / "cs", train=2, val=1)
    ds = DATASETS.build("cityscapes", split="val", root=str(root))
    assert ds[0]["image"].shape == (3, 64, 128) and set(ds[0]["label"].unique().tolist()) <= {*range(19), 255}


@pytest.mark.parametrize(
    ("spec_id", "make", "expected"),
    [
        ("gcn-k", None, "no VOCdevkit/VOC2012 here"),
        ("gcn-k", "voc-without-sbd", "train_aug needs the SBD augmentation"),
        pytest.param("icnet-branches", "cityscapes-without-gtfine", "gtFine/train: missing folder", marks=needs_paper),
    ],
)
def test_a_bad_data_root_says_what_was_expected_and_how_to_get_it(tmp_path, capsys, spec_id, make, expected):
    root = tmp_path / "data"
    if make == "voc-without-sbd":
        write_voc_sbd(root)
        import shutil

        shutil.rmtree(root / "SBD")
    elif make == "cityscapes-without-gtfine":
        import shutil

        write_cityscapes(root)
        shutil.rmtree(root / "gtFine")
    results = tmp_path / "results"
    code = main(["--results", str(results), "run", spec_id, "--scale", "paper", "--data-root", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Get " in err
    assert not results.exists()  # nothing written


def test_missing_imagenet_weights_say_which_file_to_place_where(tmp_path, capsys, torch_home):
    root = write_voc_sbd(tmp_path / "voc")
    results = tmp_path / "results"
    code = main(["--results", str(results), "run", "gcn-k", "--scale", "paper", "--data-root", str(root)])
    err = capsys.readouterr().err
    expected = torch_home / "hub" / "checkpoints" / "resnet152-f82ba261.pth"
    assert code == 2 and str(expected) in err and "https://download.pytorch.org/models/resnet152-f82ba261.pth" in err
    assert not results.exists()


# ------------------------------------------------------------------------------ end to end
def _gcn_specs(tmp_path):
    return tiny_specs(tmp_path / "specs", "gcn-k", TINY_GCN_PAPER)


@pytest.mark.slow
def test_gcn_paper_scale_end_to_end_with_weights_from_the_hub_cache_and_the_report(tmp_path, torch_home, capsys):
    root = write_voc_sbd(tmp_path / "voc")
    weights = fake_imagenet_weights(torch_home)
    specs, results, out = _gcn_specs(tmp_path), tmp_path / "results", tmp_path / "report"
    base = ["--specs", str(specs), "--results", str(results)]
    code = main([*base, "run", "gcn-k", "--scale", "paper", "--data-root", str(root), "--variant", "baseline",
                 "--variant", "k=3"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    files = sorted((results / "gcn-k" / "paper").glob("*.json"))
    assert [f.name.split("--")[0] for f in files] == ["baseline", "k-3"]
    assert not (results / "gcn-k" / "mini").exists()  # paper results never mix with mini ones
    record = json.loads(files[0].read_text())
    import hashlib

    assert record["provenance"]["weights"] == {
        "name": "ResNet18_Weights.IMAGENET1K_V1",
        "url": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    assert record["provenance"]["data_root"] == str(root) and record["config"]["data"]["root"] == "data/VOC"
    assert record["class_names"][1] == "aeroplane" and 0 <= record["metrics"]["miou"] <= 1
    report = subprocess.run(
        [sys.executable, "-m", "report", "--specs", str(specs), "--results", str(results), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert report.returncode == 0, report.stderr
    page = next(out.glob("gcn-k*paper*.md"), None) or next(p for p in out.glob("*.md") if "paper" in p.read_text())
    assert "paper" in page.read_text()


def _run_paper(specs: Path, results: Path, spec_id: str, data_root: Path, variant: str) -> int:
    """``python -m ablations run <spec_id> --scale paper`` for one variant; the exit code."""
    return main(["--specs", str(specs), "--results", str(results), "run", spec_id, "--scale", "paper",
                 "--data-root", str(data_root), "--variant", variant])  # fmt: skip


@needs_paper
@pytest.mark.slow
def test_icnet_paper_scale_end_to_end_from_a_trunk_checkpoint(tmp_path, capsys):
    from seg_core.registry import BACKBONES

    root = write_cityscapes(tmp_path / "cs")
    checkpoint = tmp_path / "trunk.pt"
    torch.save(BACKBONES.build("dilated_resnet50", width=0.125).state_dict(), checkpoint)
    specs = tiny_specs(tmp_path / "specs", "icnet-branches", TINY_ICNET_PAPER.replace("{checkpoint}", str(checkpoint)))
    results = tmp_path / "results"
    code = _run_paper(specs, results, "icnet-branches", root, "sub124")
    assert code == 0, capsys.readouterr().err
    (path,) = (results / "icnet-branches" / "paper").glob("sub124--seed0--*.json")
    record = json.loads(path.read_text())
    assert record["pretrained_backbone"]["checkpoint"] == str(checkpoint)
    assert record["class_names"][0] == "road" and len(record["class_names"]) == 19
    assert record["complexity"]["input_shape"] == [1, 3, 64, 128]
    from report.generate import generate

    written, errors = generate(specs, results, tmp_path / "report")
    page = (tmp_path / "report" / "icnet-branches-paper.md").read_text()
    assert not errors and "Cityscapes" in page and "sub124" in page


def _tiny_gscnn_specs(dest: Path, delta: str = "") -> Path:
    """gscnn-miou with its paper protocol shrunk; the trunk starts from scratch (no ImageNet
    weights in a test: ``pretrained`` is taken out of the copied base)."""
    specs = tiny_specs(dest, "gscnn-miou", TINY_GSCNN_PAPER + delta)
    base = specs / "_base" / "gscnn-paper.toml"
    text = base.read_text()
    assert ', pretrained = "IMAGENET1K_V1"' in text
    base.write_text(text.replace(', pretrained = "IMAGENET1K_V1"', ""))
    return specs


@needs_paper
@pytest.mark.slow
def test_gscnn_paper_scale_end_to_end_on_cityscapes_with_its_class_groups(tmp_path, capsys):
    """The Gated-SCNN protocol on Cityscapes: Canny on the raw images, boundary targets, the
    boundary F-score, the crop evaluation and the Cityscapes class groups all run."""
    root = write_cityscapes(tmp_path / "cs")
    specs = _tiny_gscnn_specs(tmp_path / "specs")
    results = tmp_path / "results"
    code = _run_paper(specs, results, "gscnn-miou", root, "Gated-SCNN")
    assert code == 0, capsys.readouterr().err
    (path,) = (results / "gscnn-miou" / "paper").glob("gated-scnn--seed0--*.json")
    record = json.loads(path.read_text())
    assert record["config"]["model"]["shape_width"] == 64 and record["config"]["model"]["output_stride"] == 8
    metrics = record["metrics"]
    for name in ("large_miou", "thin_miou", "small_miou", "bf_3px", "crop400_miou"):
        assert name in metrics, name
    assert any(k.startswith("seg_core/class_groups.py::") for k in record["provenance"]["code"])


def test_the_cityscapes_groups_are_named_classes_and_refuse_another_dataset():
    from seg_core.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_GROUPS
    from seg_core.registry import METRIC_FAMILIES, ConfigError

    label = torch.arange(19, dtype=torch.uint8).reshape(1, 1, 19)
    pred = label.clone().long()
    pole, road = CITYSCAPES_CLASSES.index("pole"), CITYSCAPES_CLASSES.index("road")
    pred[0, 0, pole] = road  # the pole pixel called road: pole IoU 0, road IoU 1/2
    family = METRIC_FAMILIES.build("cityscapes_groups", num_classes=19)
    family.update(pred, {"label": label})
    scores = family.summary()
    assert scores["thin_miou"] == pytest.approx(3 / 4)  # pole 0; fence, traffic light, traffic sign 1
    assert scores["large_miou"] == pytest.approx((0.5 + 6) / 7) and scores["small_miou"] == 1.0
    assert {"pole", "traffic light"} <= set(CITYSCAPES_GROUPS["thin"])
    with pytest.raises(ConfigError, match="19 classes"):
        METRIC_FAMILIES.build("cityscapes_groups", num_classes=8)


def test_a_metric_family_that_cannot_read_the_datasets_classes_fails_at_validation(tmp_path, capsys):
    """streets_groups on Cityscapes is refused before any training, naming the key and dataset."""
    root = write_cityscapes(tmp_path / "cs")
    specs = _tiny_gscnn_specs(tmp_path / "specs", '[scales.paper.eval]\nmetrics = ["streets_groups"]\n')
    code = _run_paper(specs, tmp_path / "r", "gscnn-miou", root, "Gated-SCNN")
    err = capsys.readouterr().err
    assert code == 2 and "eval.metrics" in err and "streets_groups reads the 8 streets classes, got 19" in err
    assert "'cityscapes'" in err and not (tmp_path / "r" / "gscnn-miou").exists()


@needs_paper
def test_a_trunk_checkpoint_that_does_not_fit_is_refused_before_training(tmp_path, capsys):
    from seg_core.registry import BACKBONES

    root = write_cityscapes(tmp_path / "cs")
    checkpoint = tmp_path / "trunk.pt"
    torch.save(BACKBONES.build("dilated_resnet50", width=0.25).state_dict(), checkpoint)  # wrong width
    specs = tiny_specs(tmp_path / "specs", "icnet-branches", TINY_ICNET_PAPER.replace("{checkpoint}", str(checkpoint)))
    code = _run_paper(specs, tmp_path / "r", "icnet-branches", root, "sub124")
    err = capsys.readouterr().err
    assert code == 2 and "trunk.pt: does not fit backbone dilated_resnet50" in err
    assert not (tmp_path / "r" / "icnet-branches" / "paper").exists()


@pytest.mark.slow
def test_plan_prints_runs_gpu_hours_and_what_is_missing(tmp_path, capsys, torch_home):
    code = main(["--results", str(tmp_path / "r"), "plan", "gcn-k", "--data-root", str(tmp_path / "nowhere")])
    out = capsys.readouterr().out
    assert code == 0
    assert "gcn-k at scale paper: 8 runs (0 done, 8 to run)" in out
    assert "GPU-hours at an assumed 50 TFLOP/s" in out
    assert "no VOCdevkit/VOC2012 here" in out and "resnet152-f82ba261.pth" in out
    assert out.count("resnet152-f82ba261.pth: the weights") == 1  # one line per missing file


@needs_crf
@pytest.mark.slow
def test_every_ablation_spec_has_a_paper_scale_that_validates_and_plans():
    from ablations.planning import run_cost
    from ablations.schema import load_specs
    from ablations.sweep import expand

    specs, errors = load_specs(ROOT / "ablations" / "specs")
    assert not errors
    ablations = [spec for spec in specs if spec.kind == "ablation"]
    for spec in ablations:
        assert "paper" in spec.scales, spec.id
        runs = expand(spec, "paper", results_dir=Path("/nonexistent"))
        assert all(run_cost(run["config"])["total_macs"] > 0 for run in runs[:2])
    resnet_gcn = next(spec for spec in ablations if spec.id == "resnet-gcn")  # per-variant trunks at the paper scale
    merged, origin = resnet_gcn.resolve("paper", resnet_gcn.variant("ResNet-GCN, 1x1"))
    assert merged["model"]["backbone"] == "resnet50_gcn" and origin["model.backbone"].endswith(
        "scales.paper.model.backbone"
    )
    assert merged["pretrain"] == {"checkpoint": "weights/resnet50_gcn_imagenet.pt"}
    mini, _ = resnet_gcn.resolve("mini", resnet_gcn.variant("ResNet-GCN, 1x1"))
    assert mini["model"]["backbone"] == "mini_resnet_gcn"


# ------------------------------------------------------------------- several processes
def _env(tmp_path, torch_home):
    env = dict(os.environ, TORCH_HOME=str(torch_home), SEGBENCH_QUIET="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_and_write_one_result(tmp_path, torch_home):
    root = write_voc_sbd(tmp_path / "voc")
    fake_imagenet_weights(torch_home)
    specs = _gcn_specs(tmp_path)
    common = ["--specs", str(specs)]
    args = ["run", "gcn-k", "--scale", "paper", "--data-root", str(root), "--variant", "k=3"]
    env = _env(tmp_path, torch_home)
    one = subprocess.run(
        [sys.executable, "-m", "ablations", *common, "--results", str(tmp_path / "one"), *args],
        env=env, capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "ablations", *common, "--results", str(tmp_path / "two"), *args],
        env=env, capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    (a,) = (tmp_path / "one" / "gcn-k" / "paper").glob("*.json")
    written = list((tmp_path / "two" / "gcn-k" / "paper").glob("*.json"))
    assert len(written) == 1 and written[0].name == a.name  # one result file, the same config hash
    ra, rb = json.loads(a.read_text()), json.loads(written[0].read_text())
    assert rb["provenance"]["world_size"] == 2
    # the same global batch split over two processes: the same numbers, up to float summation order
    assert abs(ra["metrics"]["miou"] - rb["metrics"]["miou"]) < 1e-3
    assert abs(ra["training"]["final_loss"] - rb["training"]["final_loss"]) < 1e-4 * max(
        1, ra["training"]["final_loss"]
    )


@pytest.mark.slow
def test_submitit_local_executor_runs_each_pending_run_as_a_task_and_skips_finished_ones(tmp_path, torch_home):
    pytest.importorskip("submitit")
    root = write_voc_sbd(tmp_path / "voc")
    fake_imagenet_weights(torch_home)
    specs = _gcn_specs(tmp_path)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "ablations", "--specs", str(specs), "--results", str(results), "run", "gcn-k",
           "--scale", "paper", "--data-root", str(root), "--variant", "baseline", "--variant", "k=3",
           "--executor", "submitit-local", "--slurm-folder", str(tmp_path / "jobs"), "--wait"]  # fmt: skip
    env = _env(tmp_path, torch_home)
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-2000:]
    assert "submitted 2 runs as a job array" in first.stdout
    assert len(list((results / "gcn-k" / "paper").glob("*.json"))) == 2
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0 and "2 runs: all done" in again.stderr and "submitted" not in again.stdout


def test_a_slurm_flag_without_submitit_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    code = main(["--results", str(tmp_path / "r"), "run", "gcn-k", "--scale", "paper", "--executor", "slurm",
                 "--partition", "gpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "segbench[paper]"' in err
    assert not (tmp_path / "r").exists()


def test_slurm_settings_come_from_flags_over_the_user_file(tmp_path, monkeypatch):
    from ablations.cluster import load_settings
    from ablations.schema import SpecError

    config = tmp_path / "slurm.toml"
    config.write_text('partition = "a100"\naccount = "lab"\ngpus_per_run = 4\n')
    settings = load_settings({"partition": "h100", "gpus_per_run": None}, config)
    assert (settings.partition, settings.account, settings.gpus_per_run) == ("h100", "lab", 4)
    config.write_text('gpus_per_run = "four"\n')
    with pytest.raises(SpecError, match=r"slurm\.toml.*gpus_per_run.*expected int"):
        load_settings({}, config)
    config.write_text("qos = 1\n")
    with pytest.raises(SpecError, match="qos.*unknown setting"):
        load_settings({}, config)


def test_the_gpu_hour_estimate_counts_every_evaluated_view():
    from ablations.planning import views

    assert views(None, (512, 512)) == 1.0
    # 512x512 windows every 341 px over 1024x2048: rows at 0/341/512, columns at 0...1536: 18 windows
    assert views({"type": "slide", "crop": [512, 512], "stride": [341, 341]}, (1024, 2048)) == pytest.approx(18 / 8)
    assert views({"type": "multiscale", "scales": [0.5, 1.0], "flip": True}, (512, 512)) == pytest.approx(2.5)
