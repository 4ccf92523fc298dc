"""``python -m ablations plan <id> [--scale paper]``: what a sweep would run, what it would cost,
and what is missing, before anything is submitted.

**On CPU** (the mini scale) the cost is a wall time on this machine, in two ways, each row says
which: *recorded*, when a run of the same config (another seed aside) has a result anywhere under
the results folder: its recorded wall time, in units of the recording machine's calibration figure
(``provenance.calibration_gflops``: GFLOP/s of an fp32 matmul), divided by this machine's
figure measured now; *MACs*, otherwise: the run's multiply-accumulates times the seconds per MAC
the same spec's recorded runs took (calibration-scaled alike). This machine's figure is measured
under the load of the runner's parallel jobs (:func:`loaded_calibration`), as each run measures
its own at its start. The runs are then packed onto
the runner's parallel jobs (longest first), as the runner would start them; a trunk still to be
pretrained is counted as present (its one-off cost is named apart).

**On GPU** (the paper scale) the cost is an estimate from the model's multiply-accumulates
(counted on the meta device, no weights made), not a measurement: a training step costs about
three forward passes (forward,
and a backward pass of about twice the forward's work) per image of the batch at the training
crop; evaluation one forward pass per view (sliding windows, scales, flips) per validation image
at its size. GPU-hours = 2 x MACs / (the assumed sustained rate) / 3600. The default rate,
:data:`ASSUMED_TFLOPS`, is what dense convnet training in bf16/TF32 sustains on an A100/H100-class
GPU, data loading not counted; pass ``--tflops`` with a figure measured on your GPU (the ``nox -s
benchmarks`` CUDA cases give one).
"""

from __future__ import annotations

import heapq
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ablations.execute import MissingWeights, paper_model_complexity, require_checkpoint, require_weights
from ablations.protocol import dataset_kwargs
from ablations.runner import default_jobs, reusable
from ablations.runner import plan as split_done
from ablations.validate import dataset_facts, evaluated_size
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
    eval_size = evaluated_size(data)
    eval_macs = train_macs * eval_size[0] * eval_size[1] / (crop[0] * crop[1])
    total = TRAIN_PASSES * train_macs * train["steps"] * train["batch_size"]
    total += eval_macs * views(evaluation.get("inference"), eval_size) * data["val_images"]
    return {"train_gmacs_per_image": train_macs / 1e9, "total_macs": total}


# ------------------------------------------------------------------ wall time on this machine (CPU)
def config_key(config: dict) -> str:
    """A run's config with its seed aside: runs with the same key cost the same."""
    return json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True)


@dataclass
class RecordedWork:
    """Recorded runs' cost in machine-independent units: wall seconds x the recording machine's
    calibration figure (GFLOP/s), by config (seed aside) and by spec (its results folder)."""

    by_config: dict[str, list[float]] = field(default_factory=dict)
    by_spec: dict[str, dict[str, tuple[dict, list[float]]]] = field(default_factory=dict)


def read_recorded_work(results_dir: Path) -> RecordedWork:
    """Every successful result under ``results_dir/<spec>/<scale>/``; a file that is not a
    readable record with a wall time and a calibration figure is passed over (``plan`` estimates,
    the report judges files)."""
    work = RecordedWork()
    for path in sorted(Path(results_dir).glob("*/*/*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("status") != "ok":
                continue
            units = float(record["timing"]["wall_s"]) * float(record["provenance"]["calibration_gflops"])
            config = record["config"]
            key = config_key(config)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if not 0 < units < math.inf:
            continue
        work.by_config.setdefault(key, []).append(units)
        work.by_spec.setdefault(path.parts[-3], {}).setdefault(key, (config, []))[1].append(units)
    return work


class WallTimeEstimator:
    """Seconds one run takes on this machine (``calibration``: its GFLOP/s now), by the rules in
    the module docstring; ``estimate`` returns (seconds or None, how: "recorded" or "MACs")."""

    NEIGHBOURS = 4  # recorded configs of the spec that fix its seconds per MAC

    def __init__(self, work: RecordedWork, calibration: float):
        self.work, self.calibration = work, calibration
        self._macs: dict[str, float] = {}
        self._per_mac: dict[str, float | None] = {}

    def macs(self, config: dict) -> float:
        key = config_key(config)
        if key not in self._macs:
            self._macs[key] = run_cost(config)["total_macs"]
        return self._macs[key]

    def units_per_mac(self, spec_id: str) -> float | None:
        if spec_id not in self._per_mac:
            recorded = sorted(self.work.by_spec.get(spec_id, {}).items())[: self.NEIGHBOURS]
            ratios = [statistics.median(units) / self.macs(config) for _, (config, units) in recorded]
            self._per_mac[spec_id] = statistics.median(ratios) if ratios else None
        return self._per_mac[spec_id]

    def estimate(self, run: dict, spec_id: str) -> tuple[float | None, str]:
        units = self.work.by_config.get(config_key(run["config"]))
        if units:
            return statistics.median(units) / self.calibration, "recorded"
        per_mac = self.units_per_mac(spec_id)
        if per_mac is None:
            return None, "no record"
        return per_mac * self.macs(run["config"]) / self.calibration, "MACs"


def loaded_calibration(jobs: int) -> float:
    """This machine's calibration figure (:func:`ablations.execute.measure_gflops`, one
    thread) measured while ``jobs - 1`` other threads multiply matrices too: the load a run sees
    when the runner starts ``jobs`` at a time, the load its own recorded figure was measured under
    (an idle machine's figure is higher, and would make every estimate short)."""
    import threading

    import torch

    from ablations.execute import measure_gflops

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each matmul on its own thread, as each run is
    stop = threading.Event()

    def busy() -> None:
        a = torch.randn(512, 512)
        while not stop.is_set():
            a @ a

    workers = [threading.Thread(target=busy, daemon=True) for _ in range(max(0, jobs - 1))]
    try:
        for w in workers:
            w.start()
        return measure_gflops()
    finally:
        stop.set()
        for w in workers:
            w.join()
        torch.set_num_threads(threads)


def packed_wall_time(seconds: list[float], jobs: int) -> float:
    """Wall time of runs started in this order on ``jobs`` parallel workers, each run starting as
    soon as a worker is free (as the runner's process pool starts them)."""
    free_at = [0.0] * max(1, jobs)
    for s in seconds:
        heapq.heapreplace(free_at, free_at[0] + s)
    return max(free_at)


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


def on_cpu(runs: list[dict]) -> bool:
    return bool(runs) and all(r["config"]["train"].get("device", "cpu") == "cpu" for r in runs)


def describe(
    spec_id: str,
    scale: str,
    runs: list[dict],
    *,
    tflops: float,
    data_root: str | None,
    results_dir: Path | None = None,
    jobs: int | None = None,
    calibration: float | None = None,
    missing_trunks: list[str] = (),
    cold: bool = False,
) -> str:
    """The plan's text. On CPU (``calibration``: this machine's GFLOP/s now) each run's estimated
    minutes on this machine; on GPU its GPU-hours at ``tflops``."""
    done, pending = ([], list(runs)) if cold else split_done(runs)
    done_paths = {r["path"] for r in done}
    reused = set() if cold else {r["path"] for r in pending if reusable(r)}  # copied, not computed
    pending = [r for r in pending if r["path"] not in reused]
    cpu = on_cpu(runs) and calibration is not None and results_dir is not None
    lines = [
        f"{spec_id} at scale {scale}: {len(runs)} runs ({len(done)} done, "
        + (f"{len(reused)} reused from other specs, " if reused else "")
        + f"{len(pending)} to run); "
        f"results in {Path(runs[0]['path']).parent}"
        if runs
        else f"{spec_id}: no runs",
    ]
    width = max([len("variant"), *(len(r["variant"]) for r in runs)])
    cost_head = f"{'est. min':>8}  how" if cpu else f"{'GPU-h':>8}"
    lines.append(f"{'variant':<{width}} {'seed':>4}  {'status':<7} {'GMACs/img':>10} {'steps x batch':>14} {cost_head}")
    estimator = WallTimeEstimator(read_recorded_work(results_dir), calibration) if cpu else None
    total_hours = 0.0
    pending_seconds: list[float] = []
    methods: dict[str, int] = {}
    costs: dict[str, dict] = {}
    for run in runs:
        key = config_key(run["config"])
        cost = costs.get(key) or run_cost(run["config"])
        costs[key] = cost
        status = "done" if run["path"] in done_paths else "reuse" if run["path"] in reused else "to run"
        if estimator is not None:
            seconds, how = estimator.estimate(run, spec_id)
            cost_text = f"{'-' if seconds is None else format(seconds / 60, '.1f'):>8}  {how}"
            if status == "to run":
                methods[how] = methods.get(how, 0) + 1
                if seconds is not None:
                    pending_seconds.append(seconds)
        else:
            hours = 2 * cost["total_macs"] / (tflops * 1e12) / 3600
            cost_text = f"{hours:>8.2f}"
            if status == "to run":
                total_hours += hours
        train = run["config"]["train"]
        lines.append(
            f"{run['variant']:<{width}} {run['config']['seed']:>4}  {status:<7} {cost['train_gmacs_per_image']:>10.1f} "
            f"{train['steps']:>7} x {train['batch_size']:<4} {cost_text}"
        )
    if estimator is not None:
        jobs = jobs or default_jobs(len(pending))
        how = ", ".join(f"{n} {m}" for m, n in sorted(methods.items()))
        unknown = methods.get("no record", 0)
        lines.append(
            f"to run: about {packed_wall_time(pending_seconds, jobs) / 60:.0f} min on this machine "
            f"({len(pending)} runs, {jobs} at a time; calibration now {calibration:g} GFLOP/s on 1 thread"
            + (f"; estimates: {how}" if how else "")
            + ")"
            + (f"; {unknown} run(s) of configs no result records are not counted" if unknown else "")
        )
    else:
        lines.append(
            f"to run: about {total_hours:.1f} GPU-hours at an assumed {tflops:g} TFLOP/s sustained "
            f"(training = {TRAIN_PASSES} forward passes per image; --tflops to change)"
        )
    lines.extend(
        f"trunk {t}: not in the cache, pretrained once before the runs (not counted above)" for t in missing_trunks
    )
    problems = missing_inputs(pending, data_root)
    if problems:
        lines.append("missing before these runs can start:")
        lines.extend(f"  - {p}" for p in problems)
    elif pending:
        lines.append("inputs: the datasets and weights these runs need are in place")
    return "\n".join(lines)
