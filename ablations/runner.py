"""The runner: resume, stale-result pruning, one lock per results directory, executors.

* A run whose result file exists and is valid for its config hash is never re-run.
* A result of the same variant and seed under another hash is stale: removed once the new
  result is written (and at start for runs that are already done).
* Interrupted runs leave at most a hidden temp file, removed at the next start; a result file
  is either complete or absent (see :func:`ablations.store.write_atomic`).
* ``jobs == 1`` runs in-process; ``jobs > 1`` uses a spawn-based process pool, one intra-op
  thread per run (see :data:`ablations.execute.RUN_THREADS`).
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

from ablations.execute import ensure_pretrained, execute_run, pretrain_config
from ablations.store import leftover_temp_files, read_result, stale_siblings
from seg_core.progress import progress


class RunnerBusy(RuntimeError):
    pass


@contextmanager
def directory_lock(directory: Path):
    """Exclusive, crash-safe (released by the kernel on exit, SIGKILL included) lock."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunnerBusy(f"another runner is writing to {directory}; wait for it or stop it") from None
        yield


def default_jobs(pending: int) -> int:
    return max(1, min(os.cpu_count() or 1, pending))


def plan(runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Split runs into (done, pending) by looking at the results on disk."""
    done, pending = [], []
    for run in runs:
        (done if read_result(Path(run["path"]), run["config_hash"]) else pending).append(run)
    return done, pending


def _prune(run: dict) -> None:
    for stale in stale_siblings(Path(run["path"])):
        stale.unlink(missing_ok=True)


def run_sweep(
    runs: list[dict],
    *,
    cache_dir: Path,
    jobs: int | None = None,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> dict:
    """Execute the pending runs of ``runs``; returns counts."""
    directories = sorted({Path(r["path"]).parent for r in runs})
    with _locks(directories):
        for d in directories:
            for tmp in leftover_temp_files(d):
                tmp.unlink(missing_ok=True)
        done, pending = plan(runs)
        for run in done:
            _prune(run)
        log(f"{len(runs)} runs: {len(done)} done, {len(pending)} to run")
        if not pending:
            return {"total": len(runs), "skipped": len(done), "ran": 0}

        for pre_cfg in _unique(pretrain_config(r["config"]) for r in pending):
            meta = ensure_pretrained(cache_dir, pre_cfg)
            log(f"pretrained backbone {meta['hash'][:12]} ready ({meta['steps']} steps)")

        jobs = jobs or default_jobs(len(pending))
        bar = progress(len(pending), "runs", unit="run", leave=True)
        ran = 0
        try:
            if jobs == 1:
                for run in pending:
                    _report(execute_run(run, cache_dir=str(cache_dir)), run, bar, log)
                    ran += 1
            else:
                ctx = get_context("spawn")
                with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                    futures = {pool.submit(execute_run, run, cache_dir=str(cache_dir), quiet=True): run for run in pending}
                    remaining = set(futures)
                    while remaining:
                        finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                        for future in finished:
                            _report(future.result(), futures[future], bar, log)
                            ran += 1
        finally:
            bar.close()
        return {"total": len(runs), "skipped": len(done), "ran": ran}


def _report(record: dict, run: dict, bar, log) -> None:
    _prune(run)
    bar.update()
    metrics = record["metrics"]
    log(f"  {run['variant']:<14} seed {run['config']['seed']}: mIoU {100 * metrics['miou']:.2f}  "
        f"({record['timing']['wall_s']:.1f} s)")


def _unique(items) -> list:
    out = []
    for item in items:
        if item is not None and item not in out:
            out.append(item)
    return out


@contextmanager
def _locks(directories: list[Path]):
    if not directories:
        yield
        return
    with directory_lock(directories[0]), _locks(directories[1:]):
        yield
