"""Markdown pages: one per table (spec x scale) and the index."""

from __future__ import annotations

import json
import re

import pandas as pd

from ablations.schema import MIN_TAP_SHARE
from report.checks import CI_LEVEL, ORDERING_MIN_RHO, CheckResult, TableVerdict
from report.load import Table
from report.names import metric_name
from report.tables import backbone_table, claims_table, main_table, region_tables


def warnings(table: Table) -> list[str]:
    """What the reader must know before reading the numbers: failed, missing and stale runs."""
    out = []
    for f in table.failed:
        out.append(
            f"- **failed:** {f['variant']}, seed {f['seed']}: {f['reason']} (recorded; "
            f"`python -m ablations run {table.spec.id} --retry-failed` runs it again)"
        )
    if table.missing:
        listed = ", ".join(f"{v} seed {s}" for v, s in table.missing[:12]) + (" ..." if len(table.missing) > 12 else "")
        out.append(f"- **not run:** {len(table.missing)} of {table.expected} runs ({listed}).")
    if table.stale:
        out.append(
            f"- **stale results, not used:** {len(table.stale)} file(s) in `{table.directory}` belong to no current "
            f"config of this spec (an older config, or a copy): {', '.join(f'`{p}`' for p in table.stale[:6])}"
            + (" ..." if len(table.stale) > 6 else "")
            + "."
        )
    if table.changed_code:
        files = sorted({f for changed in table.changed_code.values() for f in changed})
        out.append(
            f"- **results from older code:** {len(table.changed_code)} of the runs used here were produced before "
            f"a change to {', '.join(f'`{f}`' for f in files)}; re-run them (delete their files) to refresh."
        )
    return (["## Before reading", "", *out, ""]) if out else []


HOW_TO_READ = "how-to-read.md"


def verdict_section(verdict: TableVerdict) -> list[str]:
    return [
        f"## Verdict: {verdict.label}",
        "",
        _capital(verdict.short or verdict.sentence) + f". Each claim's figures are in the claims table; how they "
        f"are judged: [How to read this report]({HOW_TO_READ}).",
        "",
    ]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def how_to_read() -> str:
    """The page every table links: how claims are judged and what each outcome word means (the
    rules of :mod:`report.checks` and :mod:`report.timing`, written once)."""
    level = f"{100 * CI_LEVEL:g}%"
    return "\n".join(
        [
            "# How to read this report",
            "",
            "Each page re-runs one paper table (or a question of ours beyond it) from a spec in `ablations/specs/`. "
            "It opens with the verdict and the claims it rests on, then the figure, the table with the paper's "
            "numbers beside ours, our reading, and how the numbers were obtained.",
            "",
            "## The mini scale",
            "",
            "Mini-scale tables run on an embedded synthetic dataset on CPU, built so that the mechanism each paper "
            "argues for has something to act on (each spec's scale block says how). Compare signs, "
            "orderings and relative gains with the paper's numbers, never absolute values.",
            "",
            "## Claims",
            "",
            "Every claim is one row of a page's claims table, with an id (C1, C2, ...) that the reading cites.",
            "",
            f"- **a beats b** is judged on the per-seed differences a - b (same seed: same data order, same "
            f"pretrained backbone), with a two-sided {level} Student-t interval for their mean. It *holds* when the "
            "interval lies wholly on the claimed side of zero, is *reversed* when it lies wholly on the other side, "
            "and is *undecided* otherwise; an undecided claim carries the number of seeds that would likely decide "
            "it if the observed mean and spread stayed as they are.",
            "- **a and b are about equal** is an equivalence test against the margin the spec states: it *holds* "
            "when the whole interval lies within the margin, *differs* when it lies wholly outside, and is "
            '*undecided* otherwise. "Not significantly different" is never read as "equal".',
            f"- **the variants rank as in the paper** is Spearman's rho between the paper's values and our seed "
            f"means, with a {level} percentile bootstrap interval over seeds (resampled jointly across variants), "
            f"judged against one bar for every table, rho >= {ORDERING_MIN_RHO:g}: it *holds* when the interval "
            "lies at or above the bar, is *reversed* when it lies below zero, *differs* when it lies below the bar "
            "otherwise, and is *undecided* when it straddles the bar or our variants tie.",
            "- A claim marked *ours* is a question beyond the paper: judged and shown, never counted in the "
            "paper's verdict.",
            "",
            "The outcome words mean one thing each: *holds* (the paper's direction, decided), *reversed* (the "
            "opposite direction, decided), *differs* (decided, and outside what the claim allows without being "
            "opposite: an effect beyond an equivalence margin, a rank correlation below the bar, a timing ratio "
            "outside its bound), *undecided* (the interval cannot tell; for timing ratios, *unstable*), *not "
            "testable* (at this scale: see below; its numbers are shown, never judged).",
            "",
            "## Not testable at this scale",
            "",
            "A claim whose mechanism the mini protocol cannot express is *not testable at this scale*, by a rule "
            "that reads only the models and the data's sizes, never a result (`ablations/regime.py`, measured into "
            "`results/<id>/regime.json`). For each pair of variants a claim compares (every pair, for a rank), the "
            "spatial convolutions that differ between the two are its mechanism; if fewer than "
            f"{MIN_TAP_SHARE:.0%} of their filter taps, summed over output cells, read the feature map rather than "
            "its padding, in training or in evaluation, while at the paper's own configuration at least that share "
            "does, the comparison no longer compares the paper's mechanism: a 3x3 filter at rate 8 on an 8x8 map "
            "keeps only its centre tap (11%), a 1x1 in effect, where on the paper's 33x33 map it keeps 70%. A "
            "filter that degenerates in the paper's setting too is the paper's own regime, and the claim is "
            "tested. What code cannot measure (e.g. layers trained from scratch for a sliver of the paper's "
            "schedule) a spec may state by hand on the claim, with its measured reason; the page shows the reason "
            "either way. A table's verdict is decided on its testable claims, with the others counted beside it; "
            "a table whose every claim is untestable is *not testable at this scale*.",
            "",
            "## Table verdicts",
            "",
            "*Reproduced*: every testable paper claim holds. *Partially reproduced*: some hold. *Not reproduced*: "
            "none holds and some are reversed or differ. *Undecided*: none can be decided with these seeds. "
            "*Incomplete*: runs are missing. *Blocked*: the spec says why it cannot run as specified yet.",
            "",
            "## Readings",
            "",
            "A reading states an effect as a finding only where a judged claim backs it: every sentence with a "
            "signed number cites a claim ([C2], or [<spec id> C1] for another page's) or says *not tested*.",
            "",
            "## Timing pages",
            "",
            "Times are medians of a benchmark's rounds on one machine; only ratios measured in one run are "
            "compared with the paper's, since absolute times do not carry across hardware, and each ratio has a "
            "range over the rounds (one item's slowest round against the other's fastest, both ways). A speedup "
            '("X is faster than Y by r") is one-sided: it *agrees* when its whole range reaches at least r over '
            "the spec's factor, faster than claimed included, and *differs* when the range lies wholly below. "
            "Any other ratio (a share, a cost) agrees when its range lies within the factor of the paper's either "
            "way and differs when it lies wholly outside. A range that straddles a bound is *unstable*: the rounds "
            "disagree and no verdict is drawn. Each page gives the machine's calibration figure (fp32 matmul "
            "GFLOP/s) beside its times.",
            "",
            "## Where the numbers live",
            "",
            "`results/<spec>/<scale>/` holds one JSON record per run (config, metrics, timing, and the hash of every "
            "source file the run depended on); `results/benchmarks/` the timing measurements. The report is "
            "regenerated from them by `nox -s report` and is byte-identical for the same files.",
            "",
        ]
    )


def provenance(table: Table) -> list[str]:
    runs = table.runs
    if runs.empty:
        return []
    records = list(runs["record"])
    first = records[0]
    cfg = first["config"]
    prov = first["provenance"]
    commits = sorted(
        {
            (r["provenance"].get("git_commit") or "unknown")[:10]
            + (" (dirty)" if r["provenance"].get("git_dirty") else "")
            for r in records
        }
    )
    calibration = sorted(
        {r["provenance"].get("calibration_gflops") for r in records if r["provenance"].get("calibration_gflops")}
    )
    reused = sum(1 for r in records if r.get("reused_from"))
    wall = sum(r["timing"]["wall_s"] for r in records if not r.get("reused_from"))
    pre = first.get("pretrained_backbone")
    speed = (
        f" on machines doing {calibration[0]:g}-{calibration[-1]:g} GFLOP/s ({prov.get('calibration', 'fp32 matmul')})"
        if calibration
        else ""
    )
    seeds = sorted(runs["seed"].unique().tolist())
    return [
        "## How these numbers were obtained",
        "",
        f"- Runs: {len(runs)} ({runs.variant.nunique()} variants x seeds {seeds})"
        + (f", {reused} of them copied from identical runs of other specs" if reused else "")
        + f"; total run time {wall:.0f} s{speed}, {prov['threads']} thread(s) per run, {prov['device']}, torch {prov['torch']}.",
        f"- Model: `{json.dumps(cfg['model'], sort_keys=True)}` (the first variant)"
        + (
            f"; backbone pretrained once ({pre['steps']} steps): committed trunk `results/trunks/{pre['trunk']}.pt` "
            f"(weights sha256 {pre['sha256'][:12]})"
            if pre and pre.get("trunk")
            else f"; backbone pretrained once ({pre['steps']} steps, cached as {pre['hash'][:12]}, not committed)"
            if pre and "steps" in pre
            else ""
        )
        + (
            f"; trunk weights from `{pre['checkpoint']}` (sha256 {pre['sha256'][:12]})"
            if pre and "checkpoint" in pre
            else ""
        )
        + ".",
        f"- Data: `{json.dumps(cfg['data'], sort_keys=True)}`.",
        f"- Training: `{json.dumps(cfg['train'], sort_keys=True)}`.",
        f"- Code: commit {', '.join(commits)}; each record lists the code it depends on, a hash per definition "
        f"(`provenance.code`). Raw results: `{table.directory}` (one JSON per run).",
        "",
    ]


def _value_at(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return "(unset: the builder's default)"
        node = node[part]
    return node


def study_section(table: Table) -> list[str]:
    """A ``[study]`` spec: what was tuned, on what, the value each run chose, and what was held
    fixed (the caveats of every conclusion on the page)."""
    study = table.spec.study
    if not study:
        return []
    metric = table.spec.metric
    nuisance = ", ".join(f"`{k}` in {json.dumps(v)}" for k, v in study["nuisance"].items())
    lines = [
        "## Tuned per variant and seed",
        "",
        f"Nuisance hyperparameters, searched for every variant and seed and chosen on the held-out training "
        f"images by {metric_name(metric)} (never on val): {nuisance}. Every number above is the chosen run's.",
    ]
    if study.get("search"):
        search = ", ".join(f"`{k}` = {json.dumps(v)}" for k, v in study["search"].items())
        lines[-1] += (
            f" The search runs use {search} (a cheaper search); the chosen setting is then run with the "
            "spec's own values, and that run is the one shown."
        )
    if study.get("scientific"):
        lines[-1] += " Scientific (what the table varies): " + ", ".join(f"`{k}`" for k in study["scientific"]) + "."
    lines.append("")
    if table.choices:
        keys = list(study["nuisance"])
        seeds = sorted({c["seed"] for c in table.choices})
        rows = []
        for variant in dict.fromkeys(c["variant"] for c in table.choices):
            mine = {c["seed"]: c for c in table.choices if c["variant"] == variant}
            row = {"variant": variant}
            for seed in seeds:
                chosen = mine.get(seed, {}).get("chosen")
                row[f"seed {seed}"] = "-" if chosen is None else ", ".join(str(chosen[k]) for k in keys)
            held = pd.DataFrame([c["holdout"] for c in mine.values()]).mean()
            for setting, value in held.items():
                label = ", ".join(str(v) for v in json.loads(setting).values())
                row[f"held-out {metric_name(metric)} at {label}"] = f"{value:.2f}"
            rows.append(row)
        lines += [
            pd.DataFrame(rows).to_markdown(index=False),
            "",
            f"Chosen {', '.join(keys)} per seed; the held-out columns are means over seeds (%).",
            "",
        ]
        lines += _gave_way(table.choices, keys)
        lines += _at_edge(table.choices, study["nuisance"])
    if study.get("fixed") and not table.runs.empty:
        config = table.runs.iloc[0]["record"]["config"]
        fixed = "; ".join(f"`{k}` = {json.dumps(_value_at(config, k))}" for k in study["fixed"])
        lines += [f"**Held fixed** (a caveat of every conclusion here): {fixed}.", ""]
    return lines


def _at_edge(choices: list[dict], nuisance: dict) -> list[str]:
    """The runs whose chosen value is the smallest or largest of a numeric grid: the best setting
    may lie beyond the searched range, so the table is tuned less well there than elsewhere."""
    lines = []
    for key, grid in nuisance.items():
        numbers = [v for v in grid if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) < 2 or len(numbers) != len(grid):
            continue
        for end, word in ((min(numbers), "smallest"), (max(numbers), "largest")):
            hits: dict[str, list[int]] = {}
            for c in choices:
                if c.get("chosen") is not None and c["chosen"][key] == end:
                    hits.setdefault(c["variant"], []).append(c["seed"])
            if hits:
                where = "; ".join(
                    f"{v} (seed{'s' if len(s) > 1 else ''} {', '.join(map(str, sorted(s)))})" for v, s in hits.items()
                )
                lines.append(f"- {key} = {end}, the {word} value searched: {where}.")
    if not lines:
        return []
    return ["**Chosen at the edge of the grid** (the best setting may lie beyond the searched range):", "", *lines, ""]


def _gave_way(choices: list[dict], keys: list[str]) -> list[str]:
    """Where the setting best on the held-out images failed in its final run (the spec's own
    schedule) and the next best was used instead (the rule of :mod:`ablations.study`)."""
    lines = []
    for c in choices:
        for g in c.get("gave_way", []):
            f = g["failure"]
            how = f"{f.get('reason', 'failed')}" + (f" at step {f['step']}" if f.get("step") is not None else "")
            setting = ", ".join(f"{k} = {g['setting'][k]}" for k in keys)
            chosen = ", ".join(f"{k} = {c['chosen'][k]}" for k in keys)
            lines.append(
                f"- **{c['variant']}, seed {c['seed']}**: {setting} was best on the held-out images, but its final "
                f"run {how}; the next best, {chosen}, is the run used."
            )
    if not lines:
        return []
    return ["**Fallbacks** (a chosen setting whose final run failed gives way to the next best):", "", *lines, ""]


def untuned_section(results: list[CheckResult], before: list[CheckResult] | None, untuned: Table | None) -> list[str]:
    """The claims judged on the untuned runs (the spec this one tunes) beside the tuned ones."""
    if before is None or untuned is None:
        return []
    name = untuned.spec.id
    rows = []
    for now, then in zip(results, before):
        fmt = (
            (lambda r: "-" if r.n == 0 else f"{r.delta:+.2f}")
            if now.kind == "pairwise"
            else (lambda r: f"{r.delta:.2f}")
        )
        rows.append(
            {
                "claim": now.claim,
                f"untuned ({name})": f"{fmt(then)}: {then.outcome}",
                "tuned": f"{fmt(now)}: {now.outcome}",
                "changed": "**yes**" if now.outcome != then.outcome else "",
            }
        )
    changed = sum(1 for r in rows if r["changed"])
    return [
        "## Tuned vs untuned",
        "",
        f"The same claims judged on [{name}]({name}.md)'s runs, where every variant trains with the one shared "
        f"setting: {changed} of {len(rows)} outcomes change with tuning.",
        "",
        pd.DataFrame(rows).to_markdown(index=False),
        "",
    ]


def ablation_page(
    table: Table,
    summary: pd.DataFrame,
    verdict: TableVerdict,
    results: list[CheckResult],
    fig_rel: str | None,
    split: str = "val",
    untuned_results: list[CheckResult] | None = None,
    untuned: Table | None = None,
) -> str:
    spec = table.spec
    scale_block = spec.scales[table.scale]
    if table.scale == "mini":
        compare = (
            f"Mini-scale numbers come from the embedded synthetic dataset: compare *shapes and signs* (orderings, "
            f"relative gains, verdicts) with the paper's {spec.paper_dataset} numbers, not absolute values."
        )
    else:
        compare = f"`{table.scale}`-scale numbers, to compare with the paper's {spec.paper_dataset} numbers."
    lines = [f"# {spec.title}", ""]
    if split != "val":
        lines += [
            f"> **Judged on the {split} split** (the training data each run held out), not on val: a side report "
            "for choices of schedule or hyperparameters, never the published numbers.",
            "",
        ]
    lines += [
        f"**Source:** {spec.source}  ",
        f"**Claim:** {spec.claim}  ",
        f"**Scale:** `{table.tag}` — {scale_block.get('description', '')}. {compare}",
        "",
    ]
    if spec.blocked and verdict.label != "blocked":  # results exist although the spec is marked blocked
        lines += [f"> **Marked blocked:** {spec.blocked}", ""]
    lines += warnings(table)
    lines += verdict_section(verdict)
    lines += claims_table(results)
    if table.tag == "mini" and table.regime is None and results:
        lines += [
            f"> The scale check was not measured (no `results/{spec.id}/regime.json`): no claim is marked *not "
            f"testable at this scale* until `python -m ablations regime {spec.id}` measures it.",
            "",
        ]
    if fig_rel:
        lines += [f"![{spec.title}]({fig_rel})", ""]
    lines += ["## Table", "", *main_table(table, summary)]
    if spec.report.get("discussion"):
        lines += ["## Our reading", "", link_citations(" ".join(spec.report["discussion"].split())), ""]
    if spec.report.get("notes"):
        lines += ["## Protocol notes", "", " ".join(spec.report["notes"].split()), ""]
    lines += backbone_table(table)
    lines += study_section(table)
    lines += untuned_section(results, untuned_results, untuned)
    lines += region_tables(table, summary)
    lines += provenance(table)
    return "\n".join(lines).rstrip("\n") + "\n"


def link_citations(text: str) -> str:
    """A reading's citations of another table's claims (``[<spec id> C4]``) as links to its page."""
    return re.sub(r"\[([a-z0-9][a-z0-9-]*) (C\d+(?:, ?C\d+)*)\](?!\()", r"[\1 \2](\1.md)", text)


OUTCOME_COLUMNS = ("holds", "undecided", "reversed", "differs", "not testable", "incomplete")


_ARXIV = re.compile(r"arXiv (\d{4}\.\d{4,5})")


def paper_ranks(rows: list[dict]) -> dict[str, tuple]:
    """Each paper's place in the report: by the earliest arXiv id its tables' ``source`` cites
    (publication order: 1606.00915 before 1703.02719), papers without one last, then by name."""
    earliest: dict[str, str] = {}
    for row in rows:
        ids = _ARXIV.findall(row.get("_source", ""))
        if row["_paper"] not in earliest or (ids and min(ids) < earliest[row["_paper"]]):
            earliest[row["_paper"]] = min(ids) if ids else earliest.get(row["_paper"], "~")
    return {paper: (arxiv, _natural_key(paper)) for paper, arxiv in earliest.items()}


def _natural_key(text: str) -> list:
    return [(part.isdigit(), int(part) if part.isdigit() else part) for part in re.split(r"(\d+)", text)]


def _tally(results: list[CheckResult]) -> dict[str, int]:
    """Outcome counts of a table's paper claims (our own questions, ``ours``, are not counted)."""
    paper = [r for r in results if not r.ours]
    counts = {o: sum(r.outcome == o for r in paper) for o in OUTCOME_COLUMNS}
    return {"claims": len(paper), **counts}


def _tally_phrase(t: dict[str, int]) -> str:
    if not t["claims"]:
        return ""
    rest = ", ".join(f"{t[o]} {o}" for o in OUTCOME_COLUMNS[1:] if t[o])
    return f"{t['holds']}/{t['claims']} hold" + (f", {rest}" if rest else "")


def spec_errors(errors: list[str]) -> list[str]:
    """The index's list of spec files that could not be read (nothing when there are none)."""
    if not errors:
        return []
    return [
        "**Specs that could not be read** (fix them; the other pages are current):",
        "",
        *[f"- {e}" for e in errors],
        "",
    ]


INDEX_CELL_WORDS = 30  # no index cell runs longer (issue 30): the page has the sentences


def _cell(text: str) -> str:
    """Text for one index table cell: on one line, pipes escaped, at most INDEX_CELL_WORDS words."""
    words = " ".join(str(text).split()).replace("|", "\\|").split(" ")
    return " ".join(words[: INDEX_CELL_WORDS - 1]) + " …" if len(words) > INDEX_CELL_WORDS else " ".join(words)


def _index_row(row: dict, beyond: dict[str, list[dict]]) -> dict:
    """One table's row in its paper's section: what, verdict, claim tally, finding, follow-ups."""
    label = row.get("_label") or row["verdict"]
    label = "not run yet" if label == "no results" else label
    if row.get("_timing"):  # the verdict's first clause ("partially reproduced: 2 of 3 speedups agree ...")
        head, _, tally = row["verdict"].split(" (")[0].split(";")[0].partition(": ")
        verdict, finding = f"**{head}**" if tally else head, f"timing ({row['scale'].removeprefix('timing, ')})"
        return {
            "table": row["table"],
            "verdict": verdict,
            "claims": _cell(tally or "-"),
            "finding": finding,
            "runs, 2 cores": "-",
            "beyond the paper": "",
        }
    tally = _tally_phrase(_tally(row.get("_results", [])))
    if label == "blocked":
        finding = row["verdict"].removeprefix("blocked: ")  # why, from the spec
    else:
        finding = row.get("_finding") or ""
        done, _, expected = row["runs"].partition("/")
        if expected and done != expected.split(" ")[0]:  # incomplete or failed runs: say so here too
            finding = f"runs {row['runs']}" + (f"; {finding}" if finding else "")
    title = row["table"] + (f" (`{row['scale']}`)" if row["scale"] != "mini" else "")
    follow = ", ".join(
        f"[{b['_id']}]({b['_page']})" for b in beyond.get(row.get("_id"), []) if b["scale"] == row["scale"]
    )
    return {
        "table": title,
        "verdict": f"**{label}**",
        "claims": tally or "-",
        "finding": _cell(finding) or "-",
        "runs, 2 cores": _minutes(row.get("_cost_s")),
        "beyond the paper": follow,
    }


def _minutes(seconds: float | None) -> str:
    """A table's recorded run time as the index shows it ("~18 min"; "-" without runs)."""
    if seconds is None:
        return "-"
    return f"~{seconds / 60:.0f} min" if seconds < 5400 else f"~{seconds / 3600:.1f} h"


def summary_index(rows: list[dict], errors: list[str]) -> str:
    """The index: what reproduces, per paper (a tally table), every claim in one figure, then one
    line per table grouped by paper; the follow-up specs ("beyond the papers") link from the
    table they test. No paragraph in any cell: each page has the sentences."""
    beyond: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("_beyond"):
            beyond.setdefault(row["_beyond"], []).append(row)
    main = [row for row in rows if not row.get("_beyond")]
    ranks = paper_ranks(rows)
    papers = sorted(dict.fromkeys(row["_paper"] for row in main), key=ranks.__getitem__)
    lines = [
        "# segbench report",
        "",
        "Paper tables re-run from specs (`ablations/specs/`) at the mini scale: the embedded synthetic data on CPU, "
        "which tests whether a paper's *mechanism* shows, not its absolute numbers. Each claim is judged on per-seed "
        "paired differences with a 95% interval (each page says how); timing tables compare "
        "ratios measured in one run. Regenerate with `nox -s report`.",
        "",
    ]
    lines += spec_errors(errors)
    summary, totals = [], dict.fromkeys(("tables", "claims", *OUTCOME_COLUMNS, "no results"), 0)
    for paper in papers:
        tables = [r for r in main if r["_paper"] == paper and not r.get("_timing")]
        if not tables:
            continue
        t = {"tables": len(tables), "claims": 0, **dict.fromkeys(OUTCOME_COLUMNS, 0)}
        for row in tables:
            for key, value in _tally(row.get("_results", [])).items():
                t[key] += value
        t["no results"] = sum(1 for r in tables if not r.get("_results"))
        summary.append({"paper": paper, **t})
        for key in totals:
            totals[key] += t[key]
    if summary:
        lines += ["## What reproduces", ""]
        lines += [
            f"Paper claims by outcome ([what each means]({HOW_TO_READ})), papers in order of publication:",
            "",
            pd.DataFrame([*summary, {"paper": "**all**", **totals}]).to_markdown(index=False),
            "",
            "![Every claim: our effect and its 95% interval, signed so that positive is the paper's direction, with "
            "the paper's effect marked](figures/claims.png)",
            "",
            "Every pairwise claim of the tables above: our mean per-seed difference with its 95% interval, signed so "
            "that the paper's direction is positive (an *about equal* claim is drawn as measured, with its margin "
            "shaded), the paper's effect as a diamond, coloured by outcome; ordering claims (a rank correlation) "
            "are counted in the table but not drawn. The axis is linear within 2 points of zero and logarithmic "
            "beyond. Our own questions beyond the papers are not counted. *no results*: tables without results yet "
            "(blocked or not run; their lines below say why). *runs, 2 cores*: a table's recorded run times, two "
            "runs at a time (what re-running it from an empty results folder costs, its trunk's one-off "
            "pretraining aside; each page gives the machine's calibration).",
            "",
        ]
    for paper in papers:
        frame = pd.DataFrame([_index_row(row, beyond) for row in main if row["_paper"] == paper])
        if not frame["beyond the paper"].any():  # no follow-ups in this paper: no empty column
            frame = frame.drop(columns="beyond the paper")
        lines += [f"## {paper}", "", frame.to_markdown(index=False), ""]
    if beyond:
        lines += ["## Beyond the papers", ""]
        lines += [
            "Specs that test the explanations our pages give where a claim does not reproduce (a fairer tuning, the "
            "paper's data regime, a fine-tuned backbone, more seeds); each is linked from the table it tests.",
            "",
        ]
        rows_beyond = [
            {"follows up": f"[{r['_beyond']}]({r['_beyond']}.md)", **_index_row(r, {})}
            for rs in beyond.values()
            for r in rs
        ]
        lines += [pd.DataFrame(rows_beyond).to_markdown(index=False), ""]
    return "\n".join(lines)


def index(rows: list[dict], beyond: list[dict], errors: list[str]) -> str:
    lines = [
        "# segbench report",
        "",
        "Each row is one paper table re-run as a spec (`ablations/specs/`). Mini-scale rows use the embedded "
        "synthetic dataset on CPU: they test whether the paper's *mechanism* shows, not its absolute numbers. "
        "Timing rows compare ratios measured in one run with the paper's. Regenerate with `nox -s report` "
        "(or `python -m report`).",
        "",
    ]
    lines += spec_errors(errors)
    lines += [pd.DataFrame(rows).to_markdown(index=False) if rows else "No specs found.", ""]
    if beyond:
        lines += [
            "## Beyond the papers",
            "",
            "Specs that test the explanations our pages give where a claim does not reproduce (a fairer tuning, "
            "the paper's data regime, a fine-tuned backbone, more seeds); each is linked from the table it tests.",
            "",
            pd.DataFrame(beyond).to_markdown(index=False),
            "",
        ]
    return "\n".join(lines)
