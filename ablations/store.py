"""The results store: one JSON per run, written atomically, named by the run's config hash.

Layout: ``results/<ablation id>/<scale tag>/<variant slug>--seed<k>--<hash8>.json`` where the
scale tag is the scale name, or ``<scale>+<hash6>`` when command-line overrides changed the
config (so an override never mixes with, or replaces, the canonical results).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def config_hash(config: dict) -> str:
    """sha256 of the canonical JSON of a resolved config."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def dumps(record: dict[str, Any]) -> str:
    """Canonical JSON text (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(record, indent=2, sort_keys=True, allow_nan=True) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same directory, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_filename(variant_slug: str, seed: int, config_hash: str) -> str:
    return f"{variant_slug}--seed{seed}--{config_hash[:8]}.json"


def read_result(path: Path, config_hash: str | None = None) -> dict | None:
    """The record at ``path`` if it is complete, valid JSON (and of ``config_hash``); else None."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or "metrics" not in record:
        return None
    if config_hash is not None and record.get("config_hash") != config_hash:
        return None
    return record


def stale_siblings(path: Path) -> list[Path]:
    """Results of the same variant and seed under another config hash (now stale)."""
    stem = path.name.rsplit("--", 1)[0]
    return [p for p in path.parent.glob(f"{stem}--*.json") if p != path]


def leftover_temp_files(directory: Path) -> list[Path]:
    return list(directory.glob(f".*{TMP_SUFFIX}")) if directory.exists() else []
