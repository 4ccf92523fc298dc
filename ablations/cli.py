"""``python -m ablations list | show ID | run ID [--scale S] [--seeds ...] [--jobs N] [key=value ...]``.

Exit status: 0 success, 1 a run failed, 2 bad input (spec, scale, seed, override) — in which
case nothing has been written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ablations.runner import RunnerBusy, plan, run_sweep
from ablations.spec import SpecError, find_spec, load_spec, spec_paths
from ablations.sweep import expand

ROOT = Path(__file__).resolve().parent.parent


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations", description="Run paper-table ablations.")
    p.add_argument("--specs", type=Path, default=ROOT / "ablations" / "specs", help="spec directory")
    p.add_argument("--results", type=Path, default=ROOT / "results", help="results directory")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "segbench", help="cache (pretrained backbones)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the ablations and their result status")
    show = sub.add_parser("show", help="show one ablation: claim, variants, paper numbers, status")
    show.add_argument("id")
    show.add_argument("--scale", default="mini")
    run = sub.add_parser("run", help="run (resume) one ablation's sweep")
    run.add_argument("id")
    run.add_argument("--scale", default="mini", help="scale block of the spec (default: mini)")
    run.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the scale's seeds)")
    run.add_argument("--variant", action="append", help="only these variants (repeatable)")
    run.add_argument("--jobs", type=int, help="parallel runs (default: CPU cores)")
    run.add_argument("--dry-run", action="store_true", help="print the runs and exit")
    run.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. train.steps=500")
    return p


def _status(spec, scale: str, results: Path) -> str:
    runs = expand(spec, scale, results_dir=results)
    done, _ = plan(runs)
    return f"{len(done)}/{len(runs)}"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if a.startswith("-") or "=" not in a or args.command != "run"]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if args.command == "run":
        args.overrides = list(args.overrides) + extra
    try:
        if args.command == "list":
            paths = spec_paths(args.specs)
            if not paths:
                print(f"no spec files in {args.specs}", file=sys.stderr)
                return 2
            print(f"{'id':<16} {'paper table':<34} {'variants':>8}  {'mini runs':>9}  title")
            for path in paths:
                spec = load_spec(path)
                print(f"{spec.id:<16} {spec.paper_table:<34} {len(spec.variants):>8}  "
                      f"{_status(spec, 'mini', args.results):>9}  {spec.title}")
            return 0
        spec = load_spec(find_spec(args.id, args.specs))
        if args.command == "show":
            print(f"{spec.id}: {spec.title}\n  source: {spec.source}\n  claim:  {spec.claim}\n  metric: {spec.metric}")
            print(f"  scales: {', '.join(f'{s} (seeds {spec.seeds(s)})' for s in spec.scales)}")
            print(f"  results at {args.scale}: {_status(spec, args.scale, args.results)} runs done")
            for v in spec.variants:
                merged, _ = spec.resolve(args.scale, v)
                paper = ", ".join(f"{k} {val}" for k, val in v.paper.items()) or "-"
                print(f"  - {v.name:<12} paper: {paper:<14} model: {json.dumps(merged['model'], sort_keys=True)}")
            return 0
        runs = expand(spec, args.scale, results_dir=args.results, seeds=args.seeds,
                      overrides=args.overrides, variants=args.variant)
        if args.jobs is not None and args.jobs < 1:
            raise SpecError("<command line>", "--jobs", f"expected an integer >= 1, got {args.jobs}")
        if args.dry_run:
            for run in runs:
                print(run["path"])
            return 0
        t0 = time.perf_counter()
        counts = run_sweep(runs, cache_dir=args.cache, jobs=args.jobs)
        print(f"{spec.id}: {counts['ran']} ran, {counts['skipped']} already done, "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        return 0
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunnerBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
