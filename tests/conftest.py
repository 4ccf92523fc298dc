"""Shared fixtures: a tiny, fast spec (32 px shapes, a few steps) in a temp directory."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("SEGBENCH_QUIET", "1")

TINY_SPEC = """
id = "tiny"
title = "Tiny GCN sweep"
source = "test fixture"
paper_table = "Large Kernel Matters, Table 1"
paper_dataset = "PASCAL VOC 2012 val"
claim = "k=5 beats the 1x1 baseline"
metric = "miou"
baseline = "baseline"
headline = "k=5"

[report]
x = "model.k"
x_label = "k"
x_default = 1

[[report.checks]]
claim = "k=5 beats the 1x1 baseline"
a = "k=5"
b = "baseline"

[[report.checks]]
claim = "the variants rank as in the paper"
kind = "ordering"

[defaults.model]
name = "single_head"

[scales.mini]
seeds = [0, 1]

[scales.mini.model]
backbone = "mini_resnet"
backbone_options = { stem_width = 8, widths = [8, 16, 16], strides = [1, 2, 2] }

[scales.mini.data]
name = "shapes"
size = 32
radius_min = 3.0
radius_max = 12.0
train_images = 48
val_images = 16

[scales.mini.pretrain]
images = 64
steps = 3
batch_size = 8
lr = 0.05

[scales.mini.train]
steps = {steps}
batch_size = 8
lr = 0.01
freeze_backbone = true

[[variants]]
name = "baseline"
model.head = "pointwise"
paper.miou = 69.0

[[variants]]
name = "k=3"
model = {{ head = "gcn", k = 3 }}
paper.miou = 70.1

[[variants]]
name = "k=5"
model = {{ head = "gcn", k = 5 }}
paper.miou = 71.1
"""


def needs_extra(extra: str, module: str):
    """Skip (with the install command) where the optional extra ``extra``, which provides
    ``module``, is not installed: with only ``.[dev]`` the suite skips, never fails, for it."""
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f'needs the optional extra "{extra}": pip install -e ".[{extra}]"',
    )


needs_crf = needs_extra("crf", "pydensecrf")  # DeepLab's dense CRF
needs_gscnn = needs_extra("gscnn", "cv2")  # Gated-SCNN's Canny image gradients
needs_paper = needs_extra("paper", "cityscapesscripts")  # Cityscapes' label table (and submitit)


def write_tiny_spec(directory: Path, steps: int = 4) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tiny.toml"
    path.write_text(TINY_SPEC.replace("{steps}", str(steps)).replace("{{", "{").replace("}}", "}"))
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    """Paths of a tiny spec and empty results/cache directories."""
    specs = tmp_path / "specs"
    write_tiny_spec(specs)
    return {
        "specs": specs,
        "spec": specs / "tiny.toml",
        "results": tmp_path / "results",
        "cache": tmp_path / "cache",
        "root": tmp_path,
    }


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def cli_args(t: dict, *args: str) -> list[str]:
    return ["--specs", str(t["specs"]), "--results", str(t["results"]), "--cache", str(t["cache"]), *args]


def start_long_sweep(tmp_path: Path, **popen) -> tuple[subprocess.Popen, dict]:
    """``python -m ablations run`` of the tiny spec with 2,000 steps per run and two workers, in
    a child process (``popen``: Popen's options): long enough to be signalled or killed while
    it runs. Returns the process and the paths it writes."""
    specs = tmp_path / "specs"
    write_tiny_spec(specs, steps=2000)
    t = {"specs": specs, "results": tmp_path / "results", "cache": tmp_path / "cache"}
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "ablations", *cli_args(t, "run", "tiny", "--jobs", "2")]
    return subprocess.Popen(command, cwd=root, **popen), t
