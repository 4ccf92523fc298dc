"""The runner: resume, stale-result pruning, reuse across specs, failures, one lock per results
directory, executors.

* A run whose result file exists and is complete for its config hash is never re-run. A
  *failed* run (diverged) is recorded as such and re-run only with ``retry_failed``.
* A result of the same variant and seed under another hash is stale: removed once the new
  result is written (and at start for runs that are already done).
* A run config that another spec (or variant) has already computed, with the same code, is
  copied rather than computed again (``reused_from`` in the record).
* Interrupted runs leave at most a hidden temp file, removed at the next start; a result file
  is either complete or absent (see :func:`ablations.store.write_atomic`).
* Before any training the results directories must be writable; nothing is locked or created
  when nothing is left to run.
* ``jobs == 1`` runs in-process; ``jobs > 1`` uses a spawn-based process pool, one intra-op
  thread per run (see :data:`ablations.execute.RUN_THREADS`).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from ablations.execute import (
    ensure_pretrained,
    execute_run,
    paper_model_complexity,
    pretrain_config,
    provenance,
    require_checkpoint,
    require_weights,
    trunk_checkpoint,
)
from ablations.protocol import ROOT, dataset_kwargs
from ablations.schema import RECORD_VERSION, Spec
from ablations.store import dumps, find_computed, leftover_temp_files, read_result, stale_siblings, write_atomic
from ablations.trunks import load_committed, stale_parts
from ablations.validate import dataset_facts
from seg_core.distributed import Shard
from seg_core.engine import TrainingDiverged
from seg_core.progress import progress
from seg_core.registry import DATASETS


class RunnerBusy(RuntimeError):
    pass


class NotWritable(RuntimeError):
    pass


@dataclass
class SweepResult:
    total: int
    skipped: int
    ran: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)  # "variant seed k: reason"
    failed_paths: list[str] = field(default_factory=list)  # their result files, in the same order


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


def plan(runs: list[dict], retry_failed: bool = False) -> tuple[list[dict], list[dict]]:
    """Split runs into (done, pending) by looking at the results on disk."""
    done, pending = [], []
    for run in runs:
        record = read_result(Path(run["path"]), run["config_hash"])
        finished = record is not None and (record["status"] == "ok" or not retry_failed)
        (done if finished else pending).append(run)
    return done, pending


def _prune(run: dict) -> None:
    for stale in stale_siblings(Path(run["path"])):
        stale.unlink(missing_ok=True)


def check_writable(directories: list[Path]) -> None:
    """Every results directory (or its nearest existing parent) must take a new file, before any
    training (a real probe: permission bits say nothing for root, nor on a read-only mount)."""
    for d in directories:
        probe = d
        while not probe.exists():
            probe = probe.parent
        try:
            fd, tmp = tempfile.mkstemp(dir=probe, prefix=".write-probe.")
            os.close(fd)
            os.unlink(tmp)
        except OSError as e:
            raise NotWritable(f"{probe} cannot hold results ({e.strerror or e}); fix it or pass --results") from None


def check_inputs(pending: list[dict], data_root: str | None, log: Callable[[str], None]) -> None:
    """Before any training: every dataset on disk (layout, files, label values) and every set of
    pretrained weights (in the local torch hub cache) the pending runs need."""
    for data in _unique(r["config"]["data"] for r in pending):
        verify = DATASETS.metadata(data["name"]).get("verify")
        if verify is not None:
            options = dataset_kwargs(data if data_root is None else {**data, "root": data_root})
            log(f"checking dataset {data['name']} at {options.get('root', '')} ...")
            verify(options, ["train", "val"])
    for model in _unique(r["config"]["model"] for r in pending):
        require_weights(model)
    for config in _unique({**r["config"], "seed": 0} for r in pending if trunk_checkpoint(r["config"])):
        require_checkpoint(config)


@contextmanager
def prepare(
    runs: list[dict],
    *,
    cache_dir: Path,
    retry_failed: bool,
    data_root: str | None,
    log: Callable[[str], None],
    reuse: bool = True,
):
    """Everything before training, under the results directories' locks (a context manager that
    yields ``(result, pending)``): inputs checked, leftovers removed, stale results pruned,
    identical runs reused, backbones pretrained. Nothing is locked when nothing is pending."""
    directories = sorted({Path(r["path"]).parent for r in runs})
    done, pending = plan(runs, retry_failed)
    failed_done = [r for r in done if read_result(Path(r["path"]), r["config_hash"])["status"] == "failed"]
    result = SweepResult(
        len(runs),
        len(done),
        failed=[_failure_line(r) for r in failed_done],
        failed_paths=[r["path"] for r in failed_done],
    )
    if not pending:
        log(
            f"{len(runs)} runs: all done"
            + (f" ({len(failed_done)} failed; --retry-failed runs them again)" if failed_done else "")
        )
        yield result, []
        return
    check_writable(directories)
    check_inputs(pending, data_root, log)
    with ExitStack() as stack:
        for d in directories:
            stack.enter_context(directory_lock(d))
        for d in directories:
            for tmp in leftover_temp_files(d):
                tmp.unlink(missing_ok=True)
        done, pending = plan(runs, retry_failed)  # again, under the lock
        for run in done:
            _prune(run)
        for run in pending:
            path = Path(run["path"])
            if path.exists() and read_result(path) is None:
                log(f"warning: {path} is not a complete result (corrupt or truncated); it will be replaced")
        if reuse:
            pending = _reuse(pending, result, log)
        log(f"{len(runs)} runs: {len(done)} done, {result.reused} reused from other specs, {len(pending)} to run")
        for pre_cfg in _unique(pretrain_config(r["config"]) for r in pending):
            committed = load_committed(pre_cfg)  # its digest checked here, before any run
            if committed is not None:
                log(f"trunk {committed[1]['trunk']} (committed, weights {committed[1]['sha256'][:12]})")
                continue
            meta = ensure_pretrained(cache_dir, pre_cfg, log)
            log(
                f"pretrained backbone {meta['hash'][:12]} ready ({meta['steps']} steps; not committed: "
                "python -m ablations pretrain <spec> commits it to results/trunks/)"
            )
        yield result, pending


def run_sweep(
    runs: list[dict],
    *,
    cache_dir: Path,
    jobs: int | None = None,
    retry_failed: bool = False,
    data_root: str | None = None,
    shard: Shard | None = None,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
) -> SweepResult:
    """Execute the pending runs of ``runs``; a diverged run is recorded as failed and the rest go on.

    With a ``shard`` of a data-parallel world (``torchrun``), every process takes part in every
    run: the leader alone checks, locks, prunes and pretrains, and tells the others which runs
    are pending; it alone writes results. Runs are not reused from other specs under a world > 1
    (each process would have to agree on the copy).
    """
    if shard is not None and shard.world > 1:
        return _run_distributed(
            runs, cache_dir=cache_dir, retry_failed=retry_failed, data_root=data_root, shard=shard, log=log
        )
    with prepare(runs, cache_dir=cache_dir, retry_failed=retry_failed, data_root=data_root, log=log) as (
        result,
        pending,
    ):
        if not pending:
            return result
        jobs = jobs or default_jobs(len(pending))
        bar = progress(len(pending), "runs", unit="run", leave=True)
        try:
            if jobs == 1:
                for run in pending:
                    _finish(run, _attempt(run, str(cache_dir), data_root=data_root), bar, log, result)
            else:
                # Workers stopped on Ctrl-C leave the pool's semaphores to the resource tracker, which
                # then warns about them at exit; that is expected here, not a leak to report.
                if "ignore:resource_tracker:UserWarning" not in sys.warnoptions:
                    sys.warnoptions.append("ignore:resource_tracker:UserWarning")
                ctx = get_context("spawn")
                pool = ProcessPoolExecutor(
                    max_workers=jobs, mp_context=ctx, initializer=_worker_setup, initargs=(os.getpid(),)
                )
                try:
                    futures = {
                        pool.submit(_attempt, run, str(cache_dir), True, None, data_root): run for run in pending
                    }
                    remaining = set(futures)
                    while remaining:
                        finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                        for future in finished:
                            _finish(futures[future], future.result(), bar, log, result)
                except BaseException:  # Ctrl-C or a crash: stop the workers now, keep what is written
                    _stop(pool)
                    raise
                pool.shutdown()
        finally:
            bar.close()
    return result


def _run_distributed(
    runs: list[dict], *, cache_dir: Path, retry_failed: bool, data_root: str | None, shard: Shard, log
) -> SweepResult:
    import torch.distributed as dist

    box: list = [None]
    with ExitStack() as stack:
        if shard.leader:
            try:
                result, pending = stack.enter_context(
                    prepare(
                        runs, cache_dir=cache_dir, retry_failed=retry_failed, data_root=data_root, log=log, reuse=False
                    )
                )
                box[0] = (result, [r["path"] for r in pending])
            except BaseException as e:  # the others must not wait for a leader that gave up
                box[0] = f"{type(e).__name__}: {e}"
                dist.broadcast_object_list(box, src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        if isinstance(box[0], str):
            raise SystemExit(f"rank {shard.rank}: the leader stopped before training ({box[0]})")
        result, paths = box[0]
        pending = [r for r in runs if r["path"] in set(paths)]
        bar = progress(len(pending), "runs", unit="run", leave=True) if shard.leader else None
        quiet = not shard.leader
        for run in pending:
            record = _attempt(run, str(cache_dir), quiet, shard, data_root)
            if shard.leader:
                _finish(run, record, bar, log, result)
        if bar is not None:
            bar.close()
        dist.barrier()
    return result


def _attempt(
    run: dict, cache_dir: str, quiet: bool = False, shard: Shard | None = None, data_root: str | None = None
) -> dict:
    """Run once; a diverged run becomes a failed record (written, so it is not silently retried)."""
    _enable_faulthandler()
    try:
        return execute_run(run, cache_dir=cache_dir, quiet=quiet, shard=shard, data_root=data_root)
    except TrainingDiverged as e:
        record = {
            "schema": RECORD_VERSION,
            "status": "failed",
            "ablation": run["ablation"],
            "scale": run["scale"],
            "scale_tag": run["scale_tag"],
            "variant": run["variant"],
            "seed": run["config"]["seed"],
            "config_hash": run["config_hash"],
            "config": run["config"],
            "overrides": run.get("overrides", {}),
            **({"trial": run["trial"]} if run.get("trial") else {}),
            "failure": {
                "reason": "diverged",
                "step": e.step,
                "loss": e.loss if e.loss == e.loss else "nan",
                "lr": e.lr,
            },
            "provenance": provenance({}),
        }
        if shard is None or shard.leader:
            write_atomic(Path(run["path"]), dumps(record))
        return record


PARENT_CHECK_S = 0.5  # how often a pool worker checks that the runner still lives


def _worker_setup(parent: int) -> None:
    """Pool workers leave Ctrl-C to the runner, which stops them (no traceback per worker), and
    die with the runner: a watcher thread ends the worker within a second of the parent's death
    (SIGKILL, SIGTERM elsewhere, a crash), so no orphan computes the queued runs without the
    results lock and then idles holding its memory (issue 32, G)."""
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)  # the parent is gone: nothing will read this worker's result

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop the workers now (Ctrl-C, a crash), then wait for the pool's manager thread to finish.
    Left running, that thread can close its wake-up pipe while the interpreter's exit handler
    writes to it: an occasional "Bad file descriptor" traceback after the one-line message."""
    processes = list((pool._processes or {}).values())  # noqa: SLF001  (the pool offers no public kill)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)
    pool.shutdown(wait=True)  # the workers are gone: the manager thread sees it and ends


def _enable_faulthandler() -> None:
    """A native crash (a segfault in a kernel) still prints where it happened."""
    import faulthandler
    import io

    try:
        faulthandler.enable()
    except (AttributeError, ValueError, io.UnsupportedOperation):  # stderr without a file descriptor (captured)
        pass


def _failure_line(run: dict) -> str:
    record = read_result(Path(run["path"]), run["config_hash"])
    f = record["failure"]
    return f"{run['variant']} seed {run['config']['seed']}: {f['reason']} at step {f.get('step')} (lr {f.get('lr', float('nan')):.3g})"


def _finish(run: dict, record: dict, bar, log, result: SweepResult) -> None:
    _prune(run)
    bar.update()
    if record["status"] == "failed":
        result.failed.append(_failure_line(run))
        result.failed_paths.append(run["path"])
        log(f"  {run['variant']:<14} seed {run['config']['seed']}: FAILED, {result.failed[-1].split(': ', 1)[1]}")
        return
    result.ran += 1
    log(
        f"  {run['variant']:<14} seed {run['config']['seed']}: mIoU {100 * record['metrics']['miou']:.2f}  "
        f"({record['timing']['wall_s']:.1f} s)"
    )


def reusable(run: dict) -> tuple[Path, dict] | None:
    """A successful result of exactly this run config, with current code, written for another
    spec or variant: (its file, its record), copied instead of computed (also what ``plan``
    counts as reused)."""
    found = find_computed(Path(run["path"]).parents[2], run["config_hash"], Path(run["path"]))
    return None if found is None or stale_parts(found[1], ROOT) else found


def _reuse(pending: list[dict], result: SweepResult, log) -> list[dict]:
    """Copy results of identical run configs computed elsewhere (same code); return what is left."""
    left = []
    results_dir = Path(pending[0]["path"]).parents[2]
    for run in pending:
        found = reusable(run)
        if found is None:
            left.append(run)
            continue
        source, record = found
        copy = dict(
            {k: v for k, v in record.items() if k != "trial"},
            ablation=run["ablation"],
            scale=run["scale"],
            scale_tag=run["scale_tag"],
            variant=run["variant"],
            overrides=run.get("overrides", {}),
            **({"trial": run["trial"]} if run.get("trial") else {}),
            reused_from=source.relative_to(results_dir.parent).as_posix()
            if source.is_relative_to(results_dir.parent)
            else str(source),
        )
        write_atomic(Path(run["path"]), dumps(copy))
        _prune(run)
        result.reused += 1
    return left


def _unique(items) -> list:
    out = []
    for item in items:
        if item is not None and item not in out:
            out.append(item)
    return out


# ----------------------------------------------------------------- the paper configuration
def paper_models(spec: Spec) -> dict[str, dict] | None:
    """Per variant, the complexity of its model at the paper's configuration ([paper_model]):
    the variant's model at the ``paper`` scale (else ``mini``), with the block's model
    overrides, ``num_classes`` and ``input_size``; counted on the meta device."""
    if not spec.paper_model:
        return None
    base_scale = "paper" if "paper" in spec.scales else "mini"
    block = spec.paper_model
    out = {}
    for variant in spec.variants:
        merged, _ = spec.resolve(base_scale, variant)
        model = {**merged["model"], **block.get("model", {}), **variant.paper_model.get("model", {})}
        out[variant.name] = paper_model_complexity(
            model, block["num_classes"], tuple(block["input_size"]), merged.get("eval", {}).get("model")
        )
    return out


def write_paper_models(spec: Spec, results_dir: Path) -> Path | None:
    """``results/<id>/paper_model.json`` (rewritten only when it changes)."""
    counts = paper_models(spec)
    if counts is None:
        return None
    path = results_dir / spec.id / "paper_model.json"
    text = (
        json.dumps(
            {"schema": RECORD_VERSION, "paper_model": spec.paper_model, "variants": counts}, indent=2, sort_keys=True
        )
        + "\n"
    )
    if not path.exists() or path.read_text() != text:
        check_writable([path.parent])
        write_atomic(path, text)
    return path


def class_names(spec: Spec, scale: str) -> list[str]:
    merged, _ = spec.resolve(scale, spec.variants[0])
    return dataset_facts(merged["data"])[0]
