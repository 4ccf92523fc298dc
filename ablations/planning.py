"""``python -m ablations plan <id> [--scale paper]``: what a sweep would run, what it would cost,
and what is missing, before anything is submitted.

The cost is an estimate from the model's multiply-accumulates (counted on the meta device, no
weights made), not a measurement: a training step costs about three forward passes (forward,
and a backward pass of about twice the forward's work) per image of the batch at the training
crop; evaluation one forward pass per view (sliding windows, scales, flips) per validation image
at its size. GPU-hours = 2 x MACs / (the assumed sustained rate) / 3600. The default rate,
:data:`ASSUMED_TFLOPS`, is what dense convnet training in bf16/TF32 sustains on an A100/H100-class
GPU, data loading not counted; pass ``--tflops`` with a figure measured on your GPU (the ``nox -s
benchmarks`` CUDA cases give one).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ablations.execute import MissingWeights, paper_model_complexity, require_checkpoint, require_weights
from ablations.protocol import dataset_kwargs
from ablations.runner import plan as split_done
from ablations.validate import dataset_facts
from seg_core.data.checks import DataError
from seg_core.registry import DATASETS

ASSUMED_TFLOPS = 50.0
TRAIN_PASSES = 3  # forward + backward (about twice the forward)


def views(inference: dict | None, image: tuple[int, int]) -> float:
    """Forward passes per evaluated image, in units of a pass over the whole image."""
    inference = dict(inference or {"type": "whole"})
    kind = inference.pop("type")
    if kind == "slide":
        (ch, cw), (sh, sw) = inference["crop"], inference["stride"]
        rows = 1 if image[0] <= ch else math.ceil((image[0] - ch) / sh) + 1
        cols = 1 if image[1] <= cw else math.ceil((image[1] - cw) / sw) + 1
        return rows * cols * (ch * cw) / (image[0] * image[1])
    if kind == "multiscale":
        inner = inference.get("inner")
        per = views(inner, image) if inner else 1.0
        return sum(s * s for s in inference.get("scales", [1.0])) * (2 if inference.get("flip", True) else 1) * per
    return 1.0


def run_cost(config: dict) -> dict:
    """Estimated multiply-accumulates of one run (training and evaluation)."""
    data = config["data"]
    class_names, crop = dataset_facts(data)
    train_macs = paper_model_complexity(config["model"], len(class_names), crop)["total"]["macs"]
    train = config["train"]
    evaluation = config.get("eval", {})
    size_of = DATASETS.metadata(data["name"]).get("eval_size")  # evaluated images, where not the crop
    eval_size = tuple(size_of({k: v for k, v in data.items()})) if size_of else crop
    eval_macs = train_macs * eval_size[0] * eval_size[1] / (crop[0] * crop[1])
    total = TRAIN_PASSES * train_macs * train["steps"] * train["batch_size"]
    total += eval_macs * views(evaluation.get("inference"), eval_size) * data["val_images"]
    return {"train_gmacs_per_image": train_macs / 1e9, "total_macs": total}


def missing_inputs(runs: list[dict], data_root: str | None) -> list[str]:
    """What a run would stop on: the dataset checks and the pretrained weights, each a line."""
    problems: list[str] = []
    seen_data, seen_models = [], []
    for run in runs:
        data, model = run["config"]["data"], run["config"]["model"]
        if data not in seen_data:
            seen_data.append(data)
            verify = DATASETS.metadata(data["name"]).get("verify")
            if verify is not None:
                options = dataset_kwargs(data if data_root is None else {**data, "root": data_root})
                try:
                    verify(options, ["train", "val"])
                except DataError as e:
                    problems.append(f"data {data['name']}: {e}")
        if model not in seen_models:
            seen_models.append(model)
            try:
                require_weights(model)
                require_checkpoint(run["config"])
            except MissingWeights as e:
                if f"weights: {e}" not in problems:
                    problems.append(f"weights: {e}")
    return problems


def describe(spec_id: str, scale: str, runs: list[dict], *, tflops: float, data_root: str | None) -> str:
    done, pending = split_done(runs)
    done_paths = {r["path"] for r in done}
    lines = [
        f"{spec_id} at scale {scale}: {len(runs)} runs ({len(done)} done, {len(pending)} to run); "
        f"results in {Path(runs[0]['path']).parent}"
        if runs
        else f"{spec_id}: no runs",
    ]
    width = max([len("variant"), *(len(r["variant"]) for r in runs)])
    lines.append(
        f"{'variant':<{width}} {'seed':>4}  {'status':<7} {'GMACs/img':>10} {'steps x batch':>14} {'GPU-h':>8}"
    )
    total_hours = 0.0
    costs: dict[str, dict] = {}
    for run in runs:
        key = json.dumps({k: v for k, v in run["config"].items() if k != "seed"}, sort_keys=True)
        cost = costs.get(key) or run_cost(run["config"])
        costs[key] = cost
        hours = 2 * cost["total_macs"] / (tflops * 1e12) / 3600
        status = "done" if run["path"] in done_paths else "to run"
        if status == "to run":
            total_hours += hours
        train = run["config"]["train"]
        lines.append(
            f"{run['variant']:<{width}} {run['config']['seed']:>4}  {status:<7} {cost['train_gmacs_per_image']:>10.1f} "
            f"{train['steps']:>7} x {train['batch_size']:<4} {hours:>8.2f}"
        )
    lines.append(
        f"to run: about {total_hours:.1f} GPU-hours at an assumed {tflops:g} TFLOP/s sustained "
        f"(training = {TRAIN_PASSES} forward passes per image; --tflops to change)"
    )
    problems = missing_inputs(pending, data_root)
    if problems:
        lines.append("missing before these runs can start:")
        lines.extend(f"  - {p}" for p in problems)
    elif pending:
        lines.append("inputs: the datasets and weights these runs need are in place")
    return "\n".join(lines)
