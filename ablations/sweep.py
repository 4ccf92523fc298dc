"""Sweep expansion: a spec x scale x seeds (+ command-line overrides) -> resolved, validated runs.

A run is a plain dict: ``ablation``, ``scale``, ``scale_tag``, ``variant``, ``slug``,
``config`` (model/data/pretrain/train/eval/seed, fully resolved), ``config_hash``,
``overrides`` and ``path``. The hash covers ``config`` only, so renaming a variant or editing
paper numbers re-uses results while any change to what is computed does not.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ablations.schema import (
    MAX_SEED,
    SECTIONS,
    Spec,
    SpecError,
    apply_override,
    normalise_name,
    run_slug,
    study_trials,
)
from ablations.store import config_hash, run_filename
from ablations.validate import locator, validate_metrics, validate_run

COMMAND_LINE = "<command line>"


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.steps=500"`` -> ``("train.steps", 500)``; values are TOML (bare words are strings)."""
    if "=" not in text:
        raise SpecError(COMMAND_LINE, text, "expected an override of the form section.key=value")
    key, raw = (part.strip() for part in text.split("=", 1))
    parts = key.split(".")
    if len(parts) < 2 or parts[0] not in SECTIONS or not all(parts):
        raise SpecError(COMMAND_LINE, key, f"expected section.key with section one of {list(SECTIONS)}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def parse_overrides(texts: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for text in texts:
        key, value = parse_override(text)
        if key in parsed:
            raise SpecError(COMMAND_LINE, key, f"given twice ({parsed[key]!r}, then {value!r}); give it once")
        for other in parsed:
            if other.startswith(f"{key}.") or key.startswith(f"{other}."):
                raise SpecError(COMMAND_LINE, key, f"overlaps the override {other}; give one of them")
        parsed[key] = value
    return parsed


def check_seeds(seeds: list[int], where: str = "--seeds") -> list[int]:
    if not seeds or any(not 0 <= s <= MAX_SEED for s in seeds) or len(set(seeds)) != len(seeds):
        raise SpecError(COMMAND_LINE, where, f"expected distinct integers in [0, {MAX_SEED}], got {seeds}")
    return seeds


def expand(
    spec: Spec,
    scale: str,
    *,
    results_dir: Path,
    seeds: list[int] | None = None,
    overrides: list[str] | None = None,
    variants: list[str] | None = None,
    validate: bool = True,
    choices: dict[tuple[str, int], dict] | None = None,
) -> list[dict]:
    """All runs of ``spec`` at ``scale``, validated; raises :class:`SpecError` on a bad
    scale, seed, variant or override (before anything runs). ``validate=False`` skips the
    model checks (for listing what is done, which must stay quick).

    A ``[study]`` multiplies the runs by its nuisance settings. With a study ``search``, these
    are the *search* runs; ``choices`` ({(variant, seed): the chosen setting}, from
    :func:`ablations.study.choices`) then gives the final runs, one per (variant, seed)."""
    if scale not in spec.scales:
        raise SpecError(
            COMMAND_LINE, "--scale", f"no scale {scale!r} in {spec.file.name}; expected one of {sorted(spec.scales)}"
        )
    seed_list = spec.seeds(scale) if seeds is None else check_seeds(list(seeds))
    parsed = parse_overrides(overrides or [])
    chosen = spec.variants
    if variants:
        wanted = [normalise_name(v) for v in variants]
        unknown = sorted(set(wanted) - {v.name for v in spec.variants})
        if unknown:
            raise SpecError(
                COMMAND_LINE,
                "--variant",
                f"unknown variant(s) {unknown}; expected from {[v.name for v in spec.variants]}",
            )
        chosen = tuple(v for v in spec.variants if v.name in wanted)
    tuned = sorted(set(parsed) & set(spec.study.get("nuisance", {})))
    if tuned:
        raise SpecError(
            COMMAND_LINE,
            tuned[0],
            f"is searched by the spec's [study] (nuisance {spec.study['nuisance'][tuned[0]]}); not an override",
        )
    tag = scale if not parsed else f"{scale}+{config_hash(parsed)[:6]}"
    runs: list[dict] = []
    search = bool(spec.study.get("search")) and choices is None
    for variant, trial in ((v, t) for v in chosen for t in study_trials(spec)):
        wanted = [s for s in seed_list if choices is None or choices.get((variant.name, s)) == trial]
        if not wanted:
            continue
        merged, origin = spec.resolve(scale, variant)
        for key, value in trial.items():  # a [study]'s nuisance setting
            apply_override(merged, key, value)
            origin[key] = f"study.nuisance.{key}"
        for key, value in parsed.items():
            apply_override(merged, key, value)
            for stale in [k for k in origin if k.startswith(f"{key}.")]:
                del origin[stale]
            parts = key.split(".")
            for n in range(2, len(parts) + 1):  # the key and the tables it creates come from the command line
                prefix = ".".join(parts[:n])
                if prefix == key or prefix not in origin:
                    origin[prefix] = f"override {key}"
        for key, value in (spec.study.get("search", {}) if search else {}).items():  # a search run
            apply_override(merged, key, value)
            origin[key] = f"study.search.{key}"
        if validate:
            validate_run(merged, locator(spec.file, origin, spec.where))
        if spec.study and not merged["data"].get("holdout_images"):
            raise SpecError(
                spec.file,
                f"scales.{scale}.data.holdout_images",
                "a [study] chooses its nuisance values on held-out training images: set data.holdout_images",
            )
        slug = run_slug(variant, trial, search)
        for seed in wanted:
            config = {**{s: merged[s] for s in SECTIONS}, "seed": seed}
            h = config_hash(config)
            runs.append(
                {
                    "ablation": spec.id,
                    "scale": scale,
                    "scale_tag": tag,
                    "variant": variant.name,
                    "trial": trial,
                    "search": search,
                    "slug": slug,
                    "config": config,
                    "config_hash": h,
                    "overrides": parsed,
                    "path": str(results_dir / spec.id / tag / run_filename(slug, seed, h)),
                }
            )
    if validate:
        validate_metrics(spec, [r["config"] for r in runs])
    return runs
