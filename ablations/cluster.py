"""Sweeps on a Slurm cluster: one job-array task per pending (variant, seed), through submitit.

``python -m ablations run <id> --scale paper --executor slurm`` checks the inputs (data, weights)
and prepares the sweep here exactly as a local run does (:func:`ablations.runner.prepare`: stale
results pruned, finished runs skipped, identical runs reused, mini backbones pretrained), then
submits the pending runs as one job array and prints the job id and how to follow it. Each task
trains and evaluates one run and writes its result file atomically, as a local run would; a
task with several GPUs runs data-parallel (one process per GPU, ``tasks_per_node`` = GPUs, the
environment exported by submitit's ``TorchDistributedEnvironment``), the first process writing.

Settings come from the flags, else from a TOML file (``SEGBENCH_SLURM_CONFIG``, default
``~/.config/segbench/slurm.toml``), else the defaults below::

    partition = "gpu"        # --partition
    account = "my-lab"       # --account
    gpus_per_run = 4         # --gpus
    time_min = 1440          # --time (minutes per run)
    cpus_per_gpu = 8
    mem_gb = 64              # per node; unset: the partition's default
    folder = "slurm-logs"    # submitit's folder: pickled tasks, logs, results

``--executor submitit-local`` runs the same tasks through submitit's local executor (subprocesses
on this machine): the tests use it, and it is a way to check a sweep before queueing it.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from ablations.schema import SpecError

CONFIG_ENV = "SEGBENCH_SLURM_CONFIG"
DEFAULT_CONFIG = Path("~/.config/segbench/slurm.toml")
INSTALL = 'the slurm executors need submitit: pip install "segbench[paper]" (or pip install submitit)'


class ExecutorUnavailable(RuntimeError):
    pass


@dataclass
class SlurmSettings:
    partition: str | None = None
    account: str | None = None
    gpus_per_run: int = 1
    time_min: int = 24 * 60
    cpus_per_gpu: int = 8
    mem_gb: int | None = None
    folder: str = "slurm-logs"


MINIMUM = {"gpus_per_run": 0, "time_min": 1, "cpus_per_gpu": 1, "mem_gb": 1}  # mem_gb: None = the partition's


def config_file() -> Path:
    return Path(os.environ.get(CONFIG_ENV, str(DEFAULT_CONFIG))).expanduser()


def load_settings(flags: dict, path: Path | None = None) -> SlurmSettings:
    """The flags (those not None) over the user's config file over the defaults; a wrong key or
    value in the file is a :class:`SpecError` naming the file, key and value."""
    path = path or config_file()
    values: dict = {}
    if path.is_file():
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise SpecError(path, "-", f"not a readable TOML file ({e})") from None
    types = {f.name: f.type for f in fields(SlurmSettings)}
    for key, value in values.items():
        if key not in types:
            raise SpecError(path, key, f"unknown setting; expected one of {sorted(types)}")
        expected = int if "int" in types[key] else str
        if not isinstance(value, expected) or isinstance(value, bool):
            raise SpecError(path, key, f"expected {expected.__name__}, got {value!r}")
    given = {k: v for k, v in flags.items() if v is not None}
    settings = SlurmSettings(**{**values, **given})
    for key, least in MINIMUM.items():
        value = getattr(settings, key)
        if value is not None and value < least:
            where = "<command line>" if key in given else path  # blame what set it
            raise SpecError(where, key, f"expected an integer >= {least}, got {value}")
    return settings


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ExecutorUnavailable(INSTALL) from None
    return submitit


def require_slurm() -> None:
    """Slurm's commands are on this machine's PATH (submitit submits with ``sbatch`` and reads
    job states with ``sacct``/``squeue``); checked before anything is prepared."""
    import shutil

    missing = [c for c in ("sbatch", "squeue") if shutil.which(c) is None]
    if missing:
        raise ExecutorUnavailable(
            f"--executor slurm: no Slurm on this machine ({', '.join(missing)} not on PATH); run from a "
            "Slurm login node, or use --executor submitit-local to run the same tasks here"
        )


def run_task(run: dict, cache_dir: str, data_root: str | None) -> dict:
    """One array task: the run (data-parallel over the task's processes when there are several)."""
    from ablations.runner import _attempt
    from seg_core.distributed import Shard, from_environment

    shard: Shard | None = None
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        _submitit().helpers.TorchDistributedEnvironment().export()
        shard = from_environment()
    record = _attempt(run, cache_dir, True, shard, data_root)
    summary = {"path": run["path"], "status": record["status"]}
    if record["status"] == "ok":
        summary["miou"] = record["metrics"]["miou"]
    return summary


def submit(
    pending: list[dict], settings: SlurmSettings, *, cluster: str, cache_dir: Path, data_root: str | None, name: str
):
    """Submit ``pending`` as one job array; returns the submitit jobs (one per run, in order)."""
    submitit = _submitit()
    executor = submitit.AutoExecutor(folder=settings.folder, cluster=cluster)
    gpus = settings.gpus_per_run
    params = {
        "name": name,
        "timeout_min": settings.time_min,
        "gpus_per_node": gpus,
        "tasks_per_node": max(1, gpus),
        "cpus_per_task": settings.cpus_per_gpu,
        "slurm_array_parallelism": len(pending),
    }
    if settings.partition:
        params["slurm_partition"] = settings.partition
    if settings.account:
        params["slurm_account"] = settings.account
    if settings.mem_gb:
        params["mem_gb"] = settings.mem_gb
    executor.update_parameters(**params)
    n = len(pending)
    return executor.map_array(run_task, pending, [str(cache_dir)] * n, [data_root] * n)


LEDGER = "segbench-submitted.json"  # in submitit's folder: run file -> the job that computes it
ACTIVE_SLURM_STATES = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING")


def record_submission(folder: str, jobs: list, pending: list[dict], cluster: str) -> None:
    """Note which job computes which run file, so that the same command run again while they are
    queued or running does not submit them a second time (:func:`still_active`)."""
    from ablations.store import write_atomic

    path = Path(folder) / LEDGER
    ledger = _read_ledger(path)
    for job, run in zip(jobs, pending):
        ledger[str(run["path"])] = {"job_id": str(job.job_id), "cluster": cluster}
    write_atomic(path, json.dumps(ledger, indent=1, sort_keys=True) + "\n")


def _read_ledger(path: Path) -> dict:
    try:
        ledger = json.loads(path.read_text(encoding="utf-8"))
        return ledger if isinstance(ledger, dict) else {}
    except (OSError, ValueError):
        return {}  # no ledger (never submitted from this folder) or an unreadable one: nothing known


def still_active(pending: list[dict], folder: str) -> dict[str, str]:
    """Of the ``pending`` runs, those whose job from an earlier submission (the ledger in
    ``folder``) is still queued or running: run file -> job id. Slurm jobs are asked of
    ``squeue``; submitit-local tasks are live processes of this machine."""
    ledger = _read_ledger(Path(folder) / LEDGER)
    known = {str(r["path"]): ledger[str(r["path"])] for r in pending if str(r["path"]) in ledger}
    if not known:
        return {}
    slurm = sorted({e["job_id"] for e in known.values() if e.get("cluster") == "slurm"})
    running = _slurm_active(slurm) if slurm else set()
    active = {}
    for path, entry in known.items():
        job = str(entry.get("job_id"))
        if entry.get("cluster") == "slurm" and job in running:
            active[path] = job
        elif entry.get("cluster") == "local" and _local_alive(job):
            active[path] = job
    return active


def _slurm_active(job_ids: list[str]) -> set[str]:
    """The job ids among ``job_ids`` that squeue lists in a state that will still write a result."""
    import subprocess

    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ExecutorUnavailable(f"cannot tell whether jobs {', '.join(job_ids)} still run: squeue: {e}") from None
    active = set()
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] in ACTIVE_SLURM_STATES:
            active.add(parts[0])
    return active


def _local_alive(pid: str) -> bool:
    """A submitit-local task (its controller process) still running on this machine."""
    try:
        cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
        status = Path(f"/proc/{int(pid)}/status").read_text()
    except (OSError, ValueError):
        return False
    return b"submitit" in cmdline and "\nState:\tZ" not in status


def describe(jobs: list, pending: list[dict], settings: SlurmSettings, cluster: str) -> str:
    """What was submitted and how to follow it."""
    lines = [f"submitted {len(jobs)} runs as a job array ({cluster}), folder {Path(settings.folder).resolve()}:"]
    for job, run in zip(jobs, pending):
        lines.append(f"  {job.job_id}  {run['variant']} seed {run['config']['seed']}")
    if jobs:
        array = str(jobs[0].job_id).split("_")[0]
        if cluster == "slurm":
            lines.append(f"follow: squeue -j {array}   logs: {settings.folder}/{array}_<task>_0_log.out")
        lines.append("results land in results/<id>/<scale>/ as the tasks finish; run the same command again to")
        lines.append("resubmit what failed or was cancelled, then python -m report")
    return "\n".join(lines)
