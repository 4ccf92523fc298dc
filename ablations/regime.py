"""Whether a claim's mechanism can be expressed at a scale: the rule, fixed before any result.

A pairwise claim compares two variants. The layers it is about (its *mechanism layers*) are the
spatial convolutions that differ between the two models: present in one only, or with another
kernel, rate, stride, padding or input map. A claim is **not testable at a scale** when, on
either side, fewer than :data:`MIN_TAP_SHARE` of its mechanism layers' taps read the feature
map (:mod:`seg_core.regime`), in training or in evaluation, while at the paper's configuration
they do: the paper's large kernels or rates then mostly read padding at our scale (a 3x3 at
rate 8 on an 8x8 map is a 1x1; on the paper's 33x33 map 70% of its taps read the map), so the
comparison no longer compares the paper's mechanism, whatever its numbers say. Where the
paper's own configuration is below the share too (a rate that degenerates on the paper's map as
well), the mini run is in the paper's regime and the claim is tested. The threshold is one for
every spec and every claim, and the rule reads only the models and the data's sizes, never a
result.

A claim whose variants differ in no spatial layer (a loss, a schedule, a fusion rule) is always
testable by this rule. An ordering claim (a rank over the variants with a paper value) is
measured pair by pair (every pair of ranked variants: a rank orders each pair) and is testable
only when every pair is. What
code cannot check (layers trained from scratch for a sliver of the paper's schedule, data that
lack what a method uses) a spec states by hand on the check: ``not_testable = {kind = "stated",
reason = "..."}``, with the measured reason.

The measurement is written to ``results/<id>/regime.json`` (with every claim's shares at the
paper's configuration, where the spec has one, for comparison) by ``run`` and by
``python -m ablations regime``; the report reads it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from torch import nn

from ablations.runner import check_writable
from ablations.schema import MIN_TAP_SHARE, RECORD_VERSION, Spec, compared_pairs, geometry_hash
from ablations.store import write_atomic
from ablations.validate import build_on_meta, dataset_facts, evaluated_size
from seg_core.regime import ConvTaps, tap_coverage

PASSES = ("train", "eval")


def _coverage(spec: Spec, scale: str, variant) -> dict[str, dict[str, ConvTaps]]:
    """Per pass (training at the input size, evaluation at the evaluated size with the
    evaluation's model settings), the variant's spatial convolutions and their taps."""
    merged, _ = spec.resolve(scale, variant)
    class_names, train_size = dataset_facts(merged["data"])
    sizes = {"train": train_size, "eval": evaluated_size(merged["data"])}
    eval_model = merged.get("eval", {}).get("model") or {}
    return {
        name: _model_coverage(
            json.dumps(merged["model"], sort_keys=True),
            len(class_names),
            tuple(sizes[name]),
            json.dumps(eval_model if name == "eval" else {}, sort_keys=True),
        )
        for name in PASSES
    }


@lru_cache(maxsize=512)
def _model_coverage(model_json: str, classes: int, size: tuple[int, int], reconfigure_json: str):
    net = build_on_meta(json.loads(model_json), classes)
    reconfigure = json.loads(reconfigure_json)
    if reconfigure:
        net.reconfigure(**reconfigure)
    for module in list(net.modules()):  # shapes only: normalisation changes none, and is slow on meta
        for child_name, child in list(module.named_children()):
            if isinstance(child, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                setattr(module, child_name, nn.Identity())
    return tap_coverage(net, size)


def _share(layers: dict[str, ConvTaps], names: list[str]) -> tuple[float, str]:
    """The share of taps on the map over ``names`` (summed over their output cells), and the
    layer with the lowest share."""
    share = sum(layers[n].valid for n in names) / sum(layers[n].taps for n in names)
    return share, min(names, key=lambda n: layers[n].share)


def compare(a: dict[str, ConvTaps], b: dict[str, ConvTaps]) -> dict | None:
    """Each side's mechanism layers (its spatial convolutions that differ from the other side's:
    absent there, or another kernel, rate, stride, padding or input map); the lower side's share
    and its worst layer. None when the sides differ in no spatial convolution."""
    lowest = None
    for side, mine, other in (("a", a, b), ("b", b, a)):
        names = [n for n, taps in mine.items() if taps != other.get(n)]  # counts follow from geometry
        if names:
            share, worst = _share(mine, names)
            if lowest is None or share < lowest["share"]:
                w = mine[worst]
                lowest = {
                    "side": side,
                    "share": round(share, 4),
                    "layers": len(names),
                    "worst": {
                        "layer": worst,
                        "share": round(w.share, 4),
                        "kernel": list(w.kernel),
                        "dilation": list(w.dilation),
                        "map": list(w.map_size),
                    },
                }
    return lowest


def pair_regime(spec: Spec, scale: str, a: str, b: str, cache: dict) -> dict:
    """The mechanism layers of variants ``a`` and ``b`` at ``scale``, per pass, and the lowest
    share of taps on the map among them (None: they differ in no spatial layer)."""
    by_name = {v.name: v for v in spec.variants}
    for name in (a, b):
        if (scale, name) not in cache:
            cache[(scale, name)] = _coverage(spec, scale, by_name[name])
    passes = {p: compare(cache[(scale, a)][p], cache[(scale, b)][p]) for p in PASSES}
    measured = [(p, c) for p, c in passes.items() if c is not None]
    if not measured:
        return {"min_share": None}
    name, lowest = min(measured, key=lambda pc: pc[1]["share"])
    return {"min_share": lowest["share"], "pass": name, **lowest}


def is_testable(mini: float | None, paper: float | None) -> bool:
    """The rule: the mini protocol expresses the claim's mechanism unless its share of taps on the
    map is below :data:`MIN_TAP_SHARE` where the paper's configuration is not (a filter that
    degenerates on the paper's own map too is the paper's regime, and the claim is tested in it)."""
    if mini is None or mini >= MIN_TAP_SHARE:
        return True
    return paper is not None and paper < MIN_TAP_SHARE


def claim_regime(spec: Spec, check: dict, index: int, cache: dict) -> dict:
    """The rule applied to one claim: each compared pair (:func:`ablations.schema.compared_pairs`)
    at mini scale and, where the spec has it, at the paper's; the claim is testable when every
    pair is (an order is only as expressible as its least expressible member). ``mini`` and
    ``paper`` give the deciding pair's shares: the lowest mini share among the pairs that fail,
    else the lowest overall."""
    pairs = []
    for a, b in compared_pairs(spec, check):
        pair = {"a": a, "b": b}
        for scale in ("mini", "paper"):
            if scale in spec.scales:
                pair[scale] = pair_regime(spec, scale, a, b, cache)
        pair["testable"] = is_testable(pair["mini"]["min_share"], (pair.get("paper") or {}).get("min_share"))
        pairs.append(pair)
    failing = [p for p in pairs if not p["testable"]]
    scored = [p for p in failing or pairs if p["mini"]["min_share"] is not None]
    deciding = min(scored, key=lambda p: p["mini"]["min_share"]) if scored else None
    names = sorted({n for p in pairs for n in (p["a"], p["b"])})
    return {
        "check": index,
        "claim": check["claim"],
        "kind": check.get("kind", "pairwise"),
        "geometry": {n: geometry_hash(spec, "mini", n) for n in names},
        "pairs": pairs,
        "deciding": None if deciding is None else [deciding["a"], deciding["b"]],
        "mini": {"min_share": None if deciding is None else deciding["mini"]["min_share"]},
        "paper": None if deciding is None or "paper" not in deciding else {"min_share": deciding["paper"]["min_share"]},
        "testable": not failing,
    }


def spec_regime(spec: Spec) -> dict:
    """The measurement for every claim of ``spec``."""
    cache: dict = {}
    return {
        "schema": RECORD_VERSION,
        "rule": {
            "min_tap_share": MIN_TAP_SHARE,
            "what": "a claim is not testable at mini scale when, for a pair of variants it compares, fewer than "
            "this share of either side's differing spatial convolutions' taps read the feature map (in training "
            "or evaluation) where the paper's configuration, if the spec has one, keeps at least this share",
        },
        "claims": [claim_regime(spec, c, i, cache) for i, c in enumerate(spec.report.get("checks", []))],
    }


def regime_path(results_dir: Path, spec: Spec) -> Path:
    return results_dir / spec.id / "regime.json"


def regime_text(spec: Spec, measured: dict | None = None) -> str:
    """The file's text: ``measured`` (:func:`spec_regime`, measured here when not given)."""
    return json.dumps(measured or spec_regime(spec), indent=2, sort_keys=True) + "\n"


def write_regime(spec: Spec, results_dir: Path) -> dict | None:
    """Measure ``spec`` into ``results/<id>/regime.json`` (rewritten only when it changes) and
    return the measurement; None for a timing spec."""
    if spec.kind != "ablation":
        return None
    path = regime_path(results_dir, spec)
    measured = spec_regime(spec)
    text = regime_text(spec, measured)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        check_writable([path.parent])
        write_atomic(path, text)
    return measured
