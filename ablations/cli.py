"""``python -m ablations list | show ID | plan ID | run ID [--scale S] [--seeds ...] [--jobs N] [key=value ...]``.

``run`` executes here (``--executor local``, the default; under ``torchrun`` every process joins
each run data-parallel, see :func:`ablations.runner.run_sweep`) or submits one Slurm array task
per pending run (``--executor slurm``, :mod:`ablations.cluster`). ``plan`` prints the runs, their
estimated GPU-hours and what is missing (:mod:`ablations.planning`).

Exit status: 0 success; 1 a run failed (diverged; recorded, the others ran); 2 bad input
(spec, scale, seed, override, an unwritable results directory, a missing dataset or weights, an
executor that is not installed), in which case nothing has been written; 130 interrupted
(Ctrl-C; run again to resume); 143 terminated (SIGTERM; the same shutdown as Ctrl-C).

``list`` reads only spec and result files (no torch), so it answers in about a second.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
import time
from pathlib import Path

from ablations.schema import (
    Spec,
    SpecError,
    config_hash,
    find_spec,
    load_spec,
    load_specs,
    run_config,
    run_filename,
    run_slug,
    study_trials,
)
from ablations.store import read_result

ROOT = Path(__file__).resolve().parent.parent
COMMAND_LINE = "<command line>"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space, or over quota: the same for the user
EXIT_DISK_FULL = 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations", description="Run paper-table ablations.")
    p.add_argument("--specs", type=Path, default=ROOT / "ablations" / "specs", help="spec directory")
    p.add_argument("--results", type=Path, default=ROOT / "results", help="results directory")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "segbench", help="cache (pretrained backbones)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the ablations and their result status")
    pretrainer = sub.add_parser(
        "pretrain",
        help="commit the trunk(s) a spec's runs use to results/trunks/, or re-make a committed one and compare",
    )
    pretrainer.add_argument("id")
    pretrainer.add_argument("--scale", default="mini", help="scale block of the spec (default: mini)")
    pretrainer.add_argument(
        "--replace", action="store_true", help="write the re-made trunk over a committed one that differs"
    )
    regime = sub.add_parser(
        "regime",
        help="measure which claims the mini protocol can express (filter taps on the map) into results/<id>/regime.json",
    )
    regime.add_argument("ids", nargs="*", help="spec ids (default: every ablation spec)")
    sub.add_parser(
        "refingerprint",
        help="bring current records to the present format (per-definition fingerprints, committed trunks); no number changes",
    )
    show = sub.add_parser("show", help="show one ablation: claim, variants, paper numbers, status")
    show.add_argument("id")
    show.add_argument("--scale", default="mini")
    planner = sub.add_parser("plan", help="the runs of a sweep, their estimated GPU-hours and what is missing")
    planner.add_argument("id")
    planner.add_argument("--scale", default="paper", help="scale block of the spec (default: paper)")
    planner.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the scale's seeds)")
    planner.add_argument("--data-root", help="the dataset's root, instead of the spec's data.root")
    planner.add_argument("--tflops", type=float, help="assumed sustained TFLOP/s per GPU (default: 50)")
    planner.add_argument("--jobs", type=int, help="parallel runs the CPU estimate assumes (default: as `run` would)")
    planner.add_argument("--cold", action="store_true", help="estimate every run, as from an empty results folder")
    run = sub.add_parser("run", help="run (resume) one ablation's sweep")
    run.add_argument("id")
    run.add_argument("--scale", default="mini", help="scale block of the spec (default: mini)")
    run.add_argument("--data-root", help="the dataset's root, instead of the spec's data.root (not hashed)")
    run.add_argument(
        "--executor",
        choices=["local", "slurm", "submitit-local"],
        default="local",
        help="local: here (under torchrun: data-parallel); slurm: one job-array task per pending run; "
        "submitit-local: the same tasks as local subprocesses",
    )
    slurm = run.add_argument_group("slurm (flags over ~/.config/segbench/slurm.toml or $SEGBENCH_SLURM_CONFIG)")
    slurm.add_argument("--partition")
    slurm.add_argument("--account")
    slurm.add_argument("--gpus", type=int, dest="gpus_per_run", help="GPUs per run (one process each)")
    slurm.add_argument("--time", type=int, dest="time_min", help="time limit per run, minutes")
    slurm.add_argument("--slurm-folder", dest="folder", help="submitit's folder (logs, pickled tasks)")
    slurm.add_argument("--wait", action="store_true", help="wait for the submitted runs and report them")
    run.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the scale's seeds)")
    run.add_argument("--variant", action="append", help="only these variants (repeatable)")
    run.add_argument("--jobs", type=int, help="parallel runs (default: CPU cores)")
    run.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    run.add_argument("--dry-run", action="store_true", help="print the runs and exit")
    run.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. train.steps=500")
    return p


def _status(spec: Spec, scale: str, results: Path) -> str:
    return _status_and_cost(spec, scale, results)[0]


def _status_and_cost(spec: Spec, scale: str, results: Path) -> tuple[str, float]:
    """The table's (variant, seed) results of the current configs, from the spec and the files
    alone (no torch: ``list`` stays quick), and their recorded wall seconds in all. A
    ``[study]``'s pair is done when the run of its chosen setting is, whatever its search runs:
    the count the report and ``show`` give too."""
    done = failed = total = 0
    wall = 0.0
    for variant in spec.variants:
        for seed in spec.seeds(scale):
            total += 1
            for trial in study_trials(spec):
                h = config_hash(run_config(spec, scale, variant, seed, trial=trial))
                record = read_result(results / spec.id / scale / run_filename(run_slug(variant, trial), seed, h), h)
                if record is not None:
                    done += 1
                    failed += record["status"] == "failed"
                    wall += float((record.get("timing") or {}).get("wall_s") or 0)
                    break
    return f"{done}/{total}" + (f" ({failed} failed)" if failed else ""), wall


def _list(args) -> int:
    specs, errors = load_specs(args.specs)
    if not specs and not errors:
        print(f"no spec files in {args.specs}", file=sys.stderr)
        return 2
    blocked = []  # printed after the table, like the errors
    print(f"{'id':<20} {'kind':<8} {'paper table':<34} {'variants':>8}  {'mini runs':>9}  {'recorded':>8}  title")
    for spec in specs:
        if spec.kind == "timing":
            print(
                f"{spec.id:<20} {'timing':<8} {spec.paper_table:<34} {len(spec.items):>8}  {'-':>9}  {'-':>8}  {spec.title}"
            )
            continue
        status, wall = _status_and_cost(spec, "mini", args.results)
        cost = f"~{max(1, round(wall / 2 / 60))} min" if wall else "-"
        print(
            f"{spec.id:<20} {'ablation':<8} {spec.paper_table:<34} {len(spec.variants):>8}  "
            f"{status:>9}  {cost:>8}  {spec.title}"
        )
        if spec.blocked:
            blocked.append(f"blocked: {spec.id}: {spec.blocked}")
    print(
        "recorded: the mini runs' recorded wall times, two at a time (trunk pretraining aside); "
        "`plan ID --scale mini` estimates them on this machine",
        file=sys.stderr,
    )
    for line in blocked:
        print(line, file=sys.stderr)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 2 if errors else 0


def _pretrain(args, spec) -> int:
    """The trunks of a spec's runs: one not committed is committed (the exact weights of a cache
    entry made from the same recipe where there is one, else pretrained now); a committed one is
    re-made and compared, and overwritten only with ``--replace``."""
    from ablations.execute import pretrain_config, remake_trunk
    from ablations.sweep import expand
    from ablations.trunks import trunk_name

    runs = expand(spec, args.scale, results_dir=args.results)
    recipes = {}
    for run in runs:
        pre_cfg = pretrain_config(run["config"])
        if pre_cfg is not None:
            recipes.setdefault(trunk_name(pre_cfg), pre_cfg)
    if not recipes:
        print(f"{spec.id}: its runs at scale {args.scale} pretrain no trunk", file=sys.stderr)
        return 0
    differs = 0
    for name, pre_cfg in sorted(recipes.items()):
        line, same = remake_trunk(
            pre_cfg,
            args.cache,
            replace=args.replace,
            command=f"python -m ablations pretrain {spec.id}",
            results_dir=args.results,
        )
        print(f"{name}: {line}", file=sys.stderr)
        differs += not same
    return 1 if differs and not args.replace else 0


def _refingerprint(args) -> int:
    """Bring current records to the present format, changing no number: a record whose code
    fingerprint is per file (before definitions were fingerprinted) and whose files' code is
    unchanged gets the per-definition fingerprint of its config, computed from that same code
    (:func:`ablations.execute.config_fingerprint`); a record made from a cached trunk that has
    since been committed, the very weights (its cache key is among the trunk's
    ``legacy_hashes``), names the committed trunk and its digest, and its fingerprint then leaves
    the pretraining code out. A stale record stays as it is (re-run it)."""
    from ablations.execute import config_fingerprint, pretrain_config
    from ablations.schema import stale_sources
    from ablations.store import dumps, write_atomic
    from ablations.trunks import read_meta, trunk_name

    upgraded = linked = stale = 0
    for path in sorted(args.results.glob("*/*/*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            code = record["provenance"]["code"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"{path}: not a result record, left as it is ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        per_file = bool(code) and not any("::" in key for key in code)
        pretrained = record.get("pretrained_backbone") or {}
        pre_cfg = pretrain_config(record["config"]) if "hash" in pretrained and "trunk" not in pretrained else None
        trunk = read_meta(trunk_name(pre_cfg)) if pre_cfg is not None else None
        link = (
            trunk is not None
            and pretrained["hash"] in trunk.get("legacy_hashes", [])
            and pretrained.get("sha256", trunk["sha256"]) == trunk["sha256"]
        )
        if not (per_file or link):
            continue
        changed = stale_sources(code, ROOT)
        if changed:
            stale += 1
            print(f"{path}: stale ({', '.join(changed)} changed since), left as it is", file=sys.stderr)
            continue
        if link:
            entry = {"trunk": trunk["trunk"], "sha256": trunk["sha256"], "hash": trunk["recipe_hash"]}
            record["pretrained_backbone"] = {
                **entry,
                "steps": pretrained["steps"],
                "final_loss": pretrained["final_loss"],
            }
        record["provenance"]["code"] = config_fingerprint(record["config"])
        write_atomic(path, dumps(record))
        upgraded += per_file
        linked += link
    print(
        f"{upgraded} record(s) given per-definition fingerprints, {linked} linked to their committed trunk; "
        f"{stale} stale, left as they are",
        file=sys.stderr,
    )
    return 0


def _regime(args) -> int:
    """``regime [ids]``: (re)write ``results/<id>/regime.json`` for the given ablation specs (all
    by default): per claim, the share of its compared layers' filter taps that read the
    feature map, at mini scale and at the paper's configuration, and whether the claim is
    testable at mini scale by the rule of :mod:`ablations.regime`."""
    from ablations.regime import write_regime
    from ablations.runner import NotWritable
    from seg_core.progress import progress

    try:
        if args.ids:
            specs = [load_spec(find_spec(i, args.specs)) for i in args.ids]
        else:
            specs, errors = load_specs(args.specs)
            if errors:
                raise errors[0]
        specs = [s for s in specs if s.kind == "ablation"]
        bar = progress(len(specs), desc="regime", unit="spec")
        for spec in specs:
            claims = write_regime(spec, args.results)["claims"]
            bar.update()
            untestable = [f"C{c['check'] + 1}" for c in claims if not c["testable"]]
            print(
                f"{spec.id}: {len(claims)} claim{'' if len(claims) == 1 else 's'} measured"
                + (f"; not testable at mini scale: {', '.join(untestable)}" if untestable else ""),
                file=sys.stderr,
            )
        bar.close()
        return 0
    except (SpecError, NotWritable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _show(args, spec) -> int:
    if spec.kind == "timing":
        print(f"{spec.id}: {spec.title} (timing)\n  source: {spec.source}\n  claim:  {spec.claim}")
        for item in spec.items:
            print(f"  - {item.name:<22} paper: {item.paper}  model: {json.dumps(item.model, sort_keys=True)}")
        return 0
    if args.scale not in spec.scales:
        raise SpecError(
            COMMAND_LINE,
            "--scale",
            f"no scale {args.scale!r} in {spec.file.name}; expected one of {sorted(spec.scales)}",
        )
    from ablations.runner import plan
    from ablations.sweep import expand

    runs = expand(spec, args.scale, results_dir=args.results)  # validates before printing anything
    done, _ = plan(runs)
    lines = [
        f"{spec.id}: {spec.title}",
        f"  file:   {spec.file}",
        f"  source: {spec.source}",
        f"  paper:  {spec.paper_table}, {spec.paper_dataset}",
        f"  claim:  {spec.claim}",
        f"  metric: {spec.metric}",
        f"  scales: {', '.join(f'{s} (seeds {spec.seeds(s)})' for s in spec.scales)}",
        f"  results at {args.scale}: {_status(spec, args.scale, args.results)} (variant, seed) pairs"
        + (f"; the sweep's runs, searches included: {len(done)}/{len(runs)} done" if spec.study else ""),
    ]
    bases = sorted({str(p) for p in spec.document.origins.values()} - {str(spec.file)})
    if bases:
        lines.append(f"  extends: {', '.join(bases)}")
    for v in spec.variants:
        merged, origin = spec.resolve(args.scale, v)
        paper = ", ".join(f"{k} {val}" for k, val in v.paper.items()) or "-"
        lines.append(f"  - {v.name:<14} paper: {paper}")
        for section in ("model", "data", "train"):
            for key, value in merged[section].items():
                source = Path(spec.where(origin[f"{section}.{key}"])).name
                lines.append(
                    f"      {section}.{key} = {json.dumps(value, sort_keys=True)}   ({source}: {origin[f'{section}.{key}']})"
                )
    print("\n".join(lines))
    return 0


def _expand(args, spec, choices=None) -> list[dict]:
    """The runs the command line asks for (``choices``: a study's final runs)."""
    from ablations.sweep import expand

    return expand(
        spec,
        args.scale,
        results_dir=args.results,
        seeds=args.seeds,
        overrides=args.overrides,
        variants=args.variant,
        choices=choices,
    )


def _shard(args):
    """This process's part of a data-parallel world under ``torchrun`` (None outside one)."""

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if args.jobs not in (None, 1):
        raise SpecError(COMMAND_LINE, "--jobs", "under torchrun each run spans every process: leave --jobs out")
    from seg_core.distributed import from_environment

    return from_environment()


def _require_devices(args, spec, runs: list[dict]) -> None:
    """A local run asking for CUDA on a machine without it is refused before anything runs (a
    Slurm submission is not: its runs execute elsewhere)."""
    asked = sorted({r["config"]["train"].get("device", "cpu") for r in runs})
    cuda = [d for d in asked if d.startswith("cuda")]
    if cuda:
        import torch

        if not torch.cuda.is_available():
            where = COMMAND_LINE if any(o.startswith("train.device=") for o in args.overrides) else spec.file
            raise SpecError(
                where,
                "train.device",
                f"{cuda[0]!r}, but this machine has no CUDA device; use 'auto' (CUDA where there is one) "
                "or 'cpu', or submit with --executor slurm",
            )


def _plan(args, spec) -> int:
    from ablations.planning import ASSUMED_TFLOPS, describe, on_cpu
    from ablations.sweep import expand

    if args.tflops is not None and not 0 < args.tflops < math.inf:
        raise SpecError(COMMAND_LINE, "--tflops", f"expected a finite positive number, got {args.tflops}")
    if args.jobs is not None and args.jobs < 1:
        raise SpecError(COMMAND_LINE, "--jobs", f"expected an integer >= 1, got {args.jobs}")
    runs = expand(spec, args.scale, results_dir=args.results, seeds=args.seeds)
    calibration = missing_trunks = None
    if on_cpu(runs):
        from ablations.execute import pretrain_config, read_pretrained
        from ablations.planning import loaded_calibration
        from ablations.runner import default_jobs, plan
        from ablations.trunks import trunk_paths

        jobs = args.jobs or default_jobs(len(runs if args.cold else plan(runs)[1]))
        calibration = loaded_calibration(jobs)
        trunks = {}
        for run in runs if args.cold else plan(runs)[1]:
            pre_cfg = pretrain_config(run["config"])
            if pre_cfg is not None:
                trunks[json.dumps(pre_cfg, sort_keys=True)] = pre_cfg
        missing_trunks = [
            f"{pre['backbone']} ({pre['pretrain']['steps']} steps)"
            for pre in trunks.values()
            if read_pretrained(args.cache, pre)[0] is None and not trunk_paths(pre)[1].is_file()
        ]
    print(
        describe(
            spec.id,
            args.scale,
            runs,
            tflops=args.tflops or ASSUMED_TFLOPS,
            data_root=args.data_root,
            results_dir=args.results,
            jobs=jobs if calibration is not None else args.jobs,
            calibration=calibration,
            missing_trunks=missing_trunks or [],
            cold=args.cold,
        )
    )
    return 0


def _submit(args, spec) -> int:
    """``--executor slurm | submitit-local``: prepare here, submit the pending runs as one array."""
    from ablations import cluster
    from ablations.regime import write_regime
    from ablations.runner import prepare, write_paper_models

    flags = {k: getattr(args, k) for k in ("partition", "account", "gpus_per_run", "time_min", "folder")}
    settings = cluster.load_settings(flags)
    cluster._submitit()  # installed, before anything is prepared
    if args.executor == "slurm" and not args.dry_run:
        cluster.require_slurm()  # reachable, before anything is pretrained
    runs = _expand(args, spec)
    if spec.study.get("search"):  # search runs first; once all are done, the final runs
        from ablations.runner import plan
        from ablations.study import settle

        if not plan(runs)[1]:  # a final run that failed gives way to the next best setting: run again
            runs = _expand(args, spec, settle(spec, runs, lambda c: _expand(args, spec, c))[0])
        else:
            print("the search runs go first: run the same command again when they are done", file=sys.stderr)
    if args.dry_run:
        for run in runs:
            print(run["path"])
        return 0
    write_paper_models(spec, args.results)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    with prepare(runs, cache_dir=args.cache, retry_failed=args.retry_failed, data_root=args.data_root, log=log) as (
        _,
        pending,
    ):
        active = cluster.still_active(pending, settings.folder)
        if active:  # queued or running from an earlier submission: they will write their results
            print(
                f"{len(active)} of the pending runs are still queued or running from an earlier submission (jobs "
                f"{', '.join(sorted(set(active.values())))}): not submitted again; cancel them (scancel) to resubmit",
                file=sys.stderr,
            )
            pending = [r for r in pending if str(r["path"]) not in active]
        if not pending:
            return 0
        kind = "slurm" if args.executor == "slurm" else "local"
        jobs = cluster.submit(
            pending, settings, cluster=kind, cache_dir=args.cache, data_root=args.data_root, name=f"segbench-{spec.id}"
        )
        cluster.record_submission(settings.folder, jobs, pending, kind)
    write_regime(spec, args.results)
    print(cluster.describe(jobs, pending, settings, kind))
    if not args.wait:
        return 0
    failed = 0
    for job, run in zip(jobs, pending):
        try:
            summary = job.result()
        except Exception as e:  # noqa: BLE001  (a task that crashed: say which and where its log is)
            failed += 1
            print(f"  {run['variant']} seed {run['config']['seed']}: task {job.job_id} failed: {e}", file=sys.stderr)
            continue
        failed += summary["status"] != "ok"
        shown = f"mIoU {100 * summary['miou']:.2f}" if summary["status"] == "ok" else summary["status"].upper()
        print(f"  {run['variant']} seed {run['config']['seed']}: {shown}", file=sys.stderr)
    return 1 if failed else 0


def _run_local(args, spec) -> int:
    """``run`` here: the sweep (its ``[study]``'s search, then the chosen settings), the regime
    measurement, and the one-line summary. The runs are kept on ``args.planned_runs`` so that an
    interrupt can say how many are done."""
    from ablations.regime import write_regime
    from ablations.runner import run_sweep, write_paper_models

    if args.jobs is not None and args.jobs < 1:
        raise SpecError(COMMAND_LINE, "--jobs", f"expected an integer >= 1, got {args.jobs}")
    runs = args.planned_runs = _expand(args, spec)
    _require_devices(args, spec, runs)
    if spec.blocked:
        print(f"note: {spec.id} is marked blocked ({spec.file.name}): {spec.blocked}", file=sys.stderr)
    if args.dry_run:
        for run in runs:
            print(run["path"])
        if spec.study.get("search"):
            print("(then one final run per variant and seed, with the setting the search chooses)", file=sys.stderr)
        return 0
    t0 = time.perf_counter()
    write_paper_models(spec, args.results)
    shard = _shard(args)
    sweep = dict(
        cache_dir=args.cache,
        jobs=args.jobs,
        retry_failed=args.retry_failed,
        data_root=args.data_root,
        shard=shard,
    )
    result = run_sweep(runs, **sweep)
    if spec.study.get("search"):  # the final runs: each (variant, seed) at its chosen setting
        _final_runs(args, spec, runs, result, sweep)
    if spec.study:  # a setting that failed is an outcome of the search, not a failure of the sweep
        _leave_out_settled_failures(args, spec, runs, result)
    if shard is not None and not shard.leader:
        return 1 if result.failed else 0
    write_regime(spec, args.results)  # what the claims can express at this scale (ablations.regime)
    print(
        f"{spec.id}: {result.ran} ran, {result.reused} reused, {result.skipped} already done, "
        f"{len(result.failed)} failed, {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    if result.failed:
        print(
            "failed runs (recorded; run again with --retry-failed):\n  " + "\n  ".join(result.failed),
            file=sys.stderr,
        )
        return 1
    return 0


def _final_runs(args, spec, runs: list[dict], result, sweep: dict) -> None:
    """After a ``[study]``'s search: each (variant, seed) at its chosen setting, with the spec's
    own schedule; a chosen setting whose final run fails gives way to the next best
    (:mod:`ablations.study`). Adds the final runs' counts to ``result``."""
    from ablations.runner import run_sweep
    from ablations.study import failed_finals, settle

    while True:
        chosen, excluded = settle(spec, runs, lambda c: _expand(args, spec, c))
        fallback = sum(map(len, excluded.values()))
        print(
            f"{spec.id}: search done, running the {len(chosen)} chosen settings"
            + (f" ({fallback} chosen before failed in the final run: the next best instead)" if fallback else ""),
            file=sys.stderr,
        )
        final = _expand(args, spec, chosen)
        second = run_sweep(final, **sweep)
        result.ran, result.reused, result.skipped = (
            result.ran + second.ran,
            result.reused + second.reused,
            result.skipped + second.skipped,
        )
        result.failed += second.failed
        result.failed_paths += second.failed_paths
        if not failed_finals(final):
            return


def _leave_out_settled_failures(args, spec, runs: list[dict], result) -> None:
    """A ``[study]`` setting that diverged is an outcome of the search, not a failure of the
    sweep: the failures of (variant, seed) pairs the study has settled leave ``result.failed``
    (and are listed once)."""
    from ablations.study import settle

    settled, excluded = settle(spec, runs, lambda c: _expand(args, spec, c))
    left_out = {r["path"] for r in runs if (r["variant"], r["config"]["seed"]) in settled}
    for rank in range(max(map(len, excluded.values()), default=0)):  # the final runs that gave way
        gave_way = {key: trials[rank] for key, trials in excluded.items() if rank < len(trials)}
        left_out |= {r["path"] for r in _expand(args, spec, gave_way) if (r["variant"], r["config"]["seed"]) in settled}
    keep = [i for i, p in enumerate(result.failed_paths) if p not in left_out]
    dropped = [result.failed[i] for i in range(len(result.failed)) if i not in keep]
    if dropped:
        print("settings that diverged, left out of the choice:\n  " + "\n  ".join(dropped), file=sys.stderr)
    result.failed = [result.failed[i] for i in keep]
    result.failed_paths = [result.failed_paths[i] for i in keep]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so that the same clean shutdown
    runs (workers stopped, complete files only) and the command exits 143 with one line."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if a.startswith("-") or "=" not in a or args.command != "run"]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if args.command == "run":
        args.overrides = list(args.overrides) + extra
    if args.command == "list":
        try:
            return _list(args)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    if args.command == "refingerprint":
        return _refingerprint(args)
    if args.command == "regime":
        return _regime(args)
    from ablations.cluster import ExecutorUnavailable
    from ablations.execute import MissingWeights
    from ablations.runner import NotWritable, RunnerBusy, plan
    from ablations.trunks import TrunkError
    from seg_core.data.checks import DataError

    try:
        spec = load_spec(find_spec(args.id, args.specs))
        if args.command == "show":
            return _show(args, spec)
        if spec.kind == "timing":
            raise SpecError(spec.file, "kind", "a timing spec is measured by its benchmarks: nox -s benchmarks")
        if args.command == "plan":
            return _plan(args, spec)
        if args.command == "pretrain":
            return _pretrain(args, spec)
        if args.executor != "local":
            return _submit(args, spec)
        return _run_local(args, spec)
    except (SpecError, RunnerBusy, NotWritable, DataError, MissingWeights, ExecutorUnavailable, TrunkError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(
            f"error: no space left on the device{where} ({e.strerror or e}); what was written is complete "
            "(no partial file is left): free space and run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_DISK_FULL
    except KeyboardInterrupt as e:
        how, code = ("terminated (SIGTERM)", 143) if isinstance(e, Terminated) else ("interrupted", 130)
        runs = getattr(args, "planned_runs", None)
        if args.command == "run" and runs is not None:
            done, _ = plan(runs)
            print(f"{how}: {len(done)} of {len(runs)} runs done; run again to resume", file=sys.stderr)
        else:
            print(how, file=sys.stderr)
        return code
