"""Sweep expansion: a spec x scale x seeds (+ command-line overrides) -> resolved runs.

A run is a plain dict: ``ablation``, ``scale``, ``scale_tag``, ``variant``, ``slug``,
``config`` (model/data/pretrain/train/eval/seed, fully resolved), ``config_hash``,
``overrides`` and ``path``. The hash covers ``config`` only, so renaming a variant or editing
paper numbers re-uses results while any change to what is computed does not.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from ablations.spec import SECTIONS, Spec, SpecError, validate_run_sections
from ablations.store import config_hash, run_filename


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.steps=500"`` -> ``("train.steps", 500)``; values are TOML (bare words are strings)."""
    if "=" not in text:
        raise SpecError("<command line>", text, "expected an override of the form section.key=value")
    key, raw = (part.strip() for part in text.split("=", 1))
    parts = key.split(".")
    if len(parts) < 2 or parts[0] not in SECTIONS or not all(parts):
        raise SpecError("<command line>", key, f"expected section.key with section one of {list(SECTIONS)}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _apply(merged: dict, key: str, value: Any) -> None:
    section, *path = key.split(".")
    target = merged[section]
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = copy.deepcopy(value)


def expand(
    spec: Spec,
    scale: str,
    *,
    results_dir: Path,
    seeds: list[int] | None = None,
    overrides: list[str] | None = None,
    variants: list[str] | None = None,
) -> list[dict]:
    """All runs of ``spec`` at ``scale``; raises :class:`SpecError` on a bad scale/seed/override."""
    if scale not in spec.scales:
        raise SpecError(spec.file, f"scales.{scale}", f"no such scale; expected one of {sorted(spec.scales)}")
    seed_list = spec.seeds(scale) if seeds is None else list(seeds)
    if not seed_list or any(s < 0 for s in seed_list) or len(set(seed_list)) != len(seed_list):
        raise SpecError("<command line>", "--seeds", f"expected distinct integers >= 0, got {seed_list}")
    parsed = dict(parse_override(o) for o in overrides or [])
    chosen = spec.variants
    if variants:
        unknown = sorted(set(variants) - {v.name for v in spec.variants})
        if unknown:
            raise SpecError("<command line>", "--variant", f"unknown variant(s) {unknown}; expected from {[v.name for v in spec.variants]}")
        chosen = tuple(v for v in spec.variants if v.name in variants)
    tag = scale if not parsed else f"{scale}+{config_hash(parsed)[:6]}"
    runs = []
    for variant in chosen:
        merged, origin = spec.resolve(scale, variant)
        for key, value in parsed.items():
            _apply(merged, key, value)
            origin[key] = f"override {key}"
        validate_run_sections("<command line>" if parsed else spec.file, merged, origin)
        for seed in seed_list:
            config = {**{s: merged[s] for s in SECTIONS}, "seed": seed}
            paper_config = spec.paper_config_for(variant)
            if paper_config is not None:  # only present when asked for, so other hashes are unchanged
                config["paper_config"] = paper_config
            h = config_hash(config)
            runs.append({
                "ablation": spec.id, "scale": scale, "scale_tag": tag, "variant": variant.name,
                "slug": variant.slug, "config": config, "config_hash": h, "overrides": parsed,
                "path": str(results_dir / spec.id / tag / run_filename(variant.slug, seed, h)),
            })
    return runs
