"""Generate the markdown report and figures from spec files, result records and benchmark JSON.

``python -m report`` regenerates ``report/``: ``index.md``, ``how-to-read.md``, one page per spec
and scale with results (``<id>.md`` for the mini scale, ``<id>-<scale>.md`` otherwise), one page
per timing spec and device, their figures, and the exports ``claims.csv`` and ``tables.csv``. Output is deterministic: the same files give byte-identical
pages and figures.

Exit status: 0; 2 when a spec cannot be read (the others are still rendered and the index
lists the bad file) or a result file is not a result (then nothing is written).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ablations.schema import Spec, TimingSpec, load_specs
from report import exports, figures, pages, timing
from report.checks import judge_all, table_verdict
from report.load import SPLITS, ReportInputError, Table, load_table, scales_with_results
from report.tables import summarise

ROOT = Path(__file__).resolve().parent.parent
COST_WORKERS = 2  # a table's cost on the index: its runs' recorded wall times, two at a time (2 cores)


def _paper_figures(spec: Spec) -> dict[str, dict[str, float]]:
    return {v.name: v.paper for v in spec.variants}


def render_table(
    table: Table, out_dir: Path, split: str = "val", untuned: Table | None = None
) -> tuple[dict[Path, object], dict]:
    """The files of one table (page text, figure writer) and its index row; ``untuned``: the
    same table without its ``[study]``'s tuning, whose verdicts the page puts beside its own."""
    spec = table.spec
    summary = summarise(table)
    failed = {f["variant"] for f in table.failed}
    checks = spec.report.get("checks", [])
    results = judge_all(checks, spec.metric, _paper_figures(spec), table.runs, failed, table.regime)
    before = None
    if untuned is not None:
        before = judge_all(checks, spec.metric, _paper_figures(spec), untuned.runs, regime=table.regime)
    verdict = table_verdict(results) if not table.runs.empty else None
    if verdict is None:
        from report.checks import TableVerdict

        verdict = (
            TableVerdict("blocked", f"blocked: {spec.blocked}")
            if spec.blocked
            else TableVerdict("no results", "not run yet")
        )
    suffix = "" if table.tag == "mini" else f"-{table.tag}"
    fig_path = out_dir / "figures" / f"{spec.id}{suffix}.png"
    has_fig = not table.runs.empty
    text = pages.ablation_page(
        table, summary, verdict, results, f"figures/{fig_path.name}" if has_fig else None, split, before, untuned
    )
    files: dict[Path, object] = {out_dir / f"{spec.id}{suffix}.md": text}
    if has_fig:
        files[fig_path] = lambda path, t=table, s=summary: figures.figure(t, s, path)
    if "+" in table.tag:  # an override run plans no seeds: it has whatever was run
        seeds = sorted(set(table.runs["seed"])) if not table.runs.empty else []
        runs = f"{len(table.runs)} (seeds {', '.join(map(str, seeds)) or 'none'})"
    else:
        runs = f"{len(table.runs)}/{table.expected}"
        extra = len(table.runs) - (table.expected - len(table.missing) - len(table.failed))
        if extra > 0:
            runs += f" (+{extra} extra seeds)"
    if table.failed:
        runs += f", {len(table.failed)} failed"
    sentence = verdict.sentence + ("; some results are from older code" if table.changed_code else "")
    paper = paper_of(spec.paper_table)
    walls = [r["timing"]["wall_s"] for r in table.runs["record"]] if not table.runs.empty else []
    row = {
        "_cost_s": sum(walls) / COST_WORKERS if walls else None,
        "_claims_csv": exports.claim_rows(paper, table, results) if not table.runs.empty else [],
        "_tables_csv": exports.table_rows(paper, table) if not table.runs.empty else [],
        "_id": spec.id,
        "_beyond": spec.report.get("beyond"),
        "_paper": paper,
        "_source": spec.source,
        "_finding": spec.report.get("finding"),
        "_page": f"{spec.id}{suffix}.md",
        "_label": verdict.label,
        "_results": results if not table.runs.empty else [],
        "table": f"[{spec.title}]({spec.id}{suffix}.md)",
        "paper table": spec.paper_table,
        "scale": table.tag,
        "runs": runs,
        "verdict": sentence,
    }
    return files, row


def render_timing(spec: TimingSpec, results_dir: Path, out_dir: Path) -> tuple[dict[Path, object], list[dict]]:
    files: dict[Path, object] = {}
    rows = []
    for path in sorted((results_dir / "benchmarks").glob("timing-*.json")):
        measured, machine = timing.load_measurements(path)
        if not any(key[0] == spec.id for key in measured):
            continue
        device = path.stem.removeprefix("timing-")
        suffix = "" if device == "cpu" else f"-{device}"
        table = timing.rows(spec, measured)
        fig_path = out_dir / "figures" / f"{spec.id}{suffix}.png"
        has_fig = table.group.notna().any() and table.measured.any()
        source = (
            path.relative_to(results_dir.parent).as_posix() if path.is_relative_to(results_dir.parent) else str(path)
        )
        text, sentence = timing.page(
            spec, table, measured, machine, source, f"figures/{fig_path.name}" if has_fig else None
        )
        files[out_dir / f"{spec.id}{suffix}.md"] = text
        if has_fig:
            files[fig_path] = lambda p, s=spec, t=table: timing.figure(s, t, p)
        rows.append(
            {
                "table": f"[{spec.title}]({spec.id}{suffix}.md)",
                "paper table": spec.paper_table,
                "scale": f"timing, {device}",
                "runs": f"{int(table.measured.sum())}/{len(table)} items",
                "verdict": sentence,
            }
        )
    if not rows:
        rows.append(
            {
                "table": spec.title,
                "paper table": spec.paper_table,
                "scale": "timing",
                "runs": f"0/{len(spec.items)} items",
                "verdict": "not measured yet (nox -s benchmarks)",
            }
        )
    return files, rows


def paper_of(paper_table: str) -> str:
    """The paper a table belongs to: its ``paper_table`` up to the first comma or parenthesis
    ("Some Paper, Table 2": Some Paper)."""
    return re.split(r"[,(]", paper_table, maxsplit=1)[0].strip()


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def generate(
    specs_dir: Path, results_dir: Path, out_dir: Path, *, split: str = "val", tag: str | None = None, root: Path = ROOT
) -> tuple[list[Path], list[str]]:
    """Write index.md, the pages and figures; returns (written paths, spec errors). Raises
    :class:`ReportInputError` before writing anything when a result file cannot be used.

    ``tag`` (e.g. ``mini+1a2b3c``) renders the override runs of that tag instead of the
    canonical scales, for the specs that have them; ``split`` picks val or held-out metrics.
    """
    specs, spec_errors = load_specs(specs_dir)
    errors = [str(e) for e in spec_errors]
    files: dict[Path, object] = {}
    rows = []
    for spec in specs:
        if spec.kind == "timing":
            if tag is None and split == "val":
                more, new_rows = render_timing(spec, results_dir, out_dir)
                files.update(more)
                rows += [
                    {**r, "_paper": paper_of(spec.paper_table), "_source": spec.source, "_timing": True}
                    for r in new_rows
                ]
            continue
        if tag is not None:
            tags = [tag] if tag.split("+", 1)[0] in spec.scales and (results_dir / spec.id / tag).is_dir() else []
        else:
            tags = scales_with_results(spec, results_dir)
        for t in tags:
            table = load_table(spec, results_dir, t, split, root)
            untuned = None
            if spec.study.get("untuned"):
                other = next((s for s in specs if s.id == spec.study["untuned"] and s.kind != "timing"), None)
                if other is None:
                    errors.append(f"{spec.file}: study.untuned names no ablation spec ({spec.study['untuned']!r})")
                else:
                    untuned = load_table(other, results_dir, t, split, root)
            more, row = render_table(table, out_dir, split, untuned)
            files.update(more)
            rows.append(row)
    rows.sort(key=lambda row: _natural(row["paper table"]))  # by paper, then table number
    errors += _beyond_errors(rows)
    if tag is None and split == "val":
        files[out_dir / "index.md"] = pages.summary_index(rows, errors)
        claims = [(row["_paper"], r) for row in rows if not row.get("_beyond") for r in row.get("_results", ())]
        ranks = pages.paper_ranks(rows)
        claims.sort(key=lambda claim: ranks[claim[0]])  # stable: the index's order of papers
        files[out_dir / "figures" / "claims.png"] = lambda path, c=claims: figures.forest(c, path)
        by_paper = sorted((row for row in rows if "_claims_csv" in row), key=lambda row: ranks[row["_paper"]])
        files[out_dir / "claims.csv"] = exports.to_csv(
            [c for row in by_paper for c in row["_claims_csv"]], exports.CLAIM_COLUMNS
        )
        files[out_dir / "tables.csv"] = exports.to_csv(
            [t for row in by_paper for t in row["_tables_csv"]], exports.TABLE_COLUMNS
        )
    else:
        files[out_dir / "index.md"] = pages.index(*_beyond_column(rows), errors)
    files[out_dir / pages.HOW_TO_READ] = pages.how_to_read()  # every page links it
    written = []
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(content):
            content(path)
        else:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(content, encoding="utf-8")
            tmp.replace(path)
        written.append(path)
    if tag is None and split == "val":  # the canonical report: nothing stays that it no longer makes
        for orphan in sorted(set(generated_files(out_dir)) - set(written)):
            orphan.unlink()
    return written, errors


def generated_files(out_dir: Path) -> list[Path]:
    """The files in ``out_dir`` of the kinds the generator writes (pages, exports and figures)."""
    return sorted([*out_dir.glob("*.md"), *out_dir.glob("*.csv"), *(out_dir / "figures").glob("*.png")])


def _beyond_errors(rows: list[dict]) -> list[str]:
    """A follow-up spec whose ``report.beyond`` names no table with results."""
    ids = {row.get("_id") for row in rows}
    return [
        f"{row['_id']}: report.beyond names no ablation spec with results ({row['_beyond']!r})"
        for row in rows
        if row.get("_beyond") and row["_beyond"] not in ids
    ]


def _beyond_column(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the paper tables' rows, with a column linking the specs that test their pages'
    explanations beyond the paper where any exist; those specs' own rows)."""
    beyond = [row for row in rows if row.get("_beyond")]
    main = [row for row in rows if not row.get("_beyond")]
    if beyond:
        for row in main:
            links = [b["table"] for b in beyond if b["_beyond"] == row.get("_id") and b["scale"] == row["scale"]]
            row["what we tested beyond the paper"] = ", ".join(links)
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("_")} for r in rs]  # noqa: E731
    return strip(main), strip(beyond)


def _dirs(results: Path) -> list[str]:
    return [p.name for p in results.iterdir() if p.is_dir()] if results.is_dir() else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m report", description="Regenerate the markdown report.")
    p.add_argument("--specs", type=Path, default=ROOT / "ablations" / "specs")
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--out", type=Path, default=ROOT / "report")
    p.add_argument(
        "--split",
        choices=sorted(SPLITS),
        default="val",
        help="judge on val (the report) or on the held-out training data (for choices; use another --out)",
    )
    p.add_argument(
        "--tag", help="render the override runs of this scale tag (e.g. mini+1a2b3c) instead of the canonical ones"
    )
    args = p.parse_args(argv)
    if (args.split != "val" or args.tag) and args.out.resolve() == (ROOT / "report").resolve():
        p.error("--split holdout and --tag write a side report: give it its own --out")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out}: exists and is not a directory (the report is a folder of pages)")
    if args.tag and not any((args.results / spec_dir / args.tag).is_dir() for spec_dir in _dirs(args.results)):
        p.error(f"--tag {args.tag}: no results under that tag (results/<spec>/{args.tag}/ exists for no spec)")
    try:
        written, errors = generate(args.specs, args.results, args.out, split=args.split, tag=args.tag)
    except ReportInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path, file=sys.stderr)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 2 if errors else 0
