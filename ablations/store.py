"""The results store: one JSON per run, written atomically, named by the run's config hash.

Layout: ``results/<ablation id>/<scale tag>/<variant slug>--seed<k>--<hash8>.json`` where the
scale tag is the scale name, or ``<scale>+<hash6>`` when command-line overrides changed the
config (so an override never mixes with, or replaces, the canonical results).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ablations.schema import check_record, config_hash, run_filename  # noqa: F401  (re-exported)

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dumps(record: dict[str, Any]) -> str:
    """Canonical JSON text (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(record, indent=2, sort_keys=True, allow_nan=True) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same directory, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_result(path: Path, expected_hash: str | None = None) -> dict | None:
    """The record at ``path`` if it is a complete result (and of ``expected_hash``); else None."""
    try:
        record = check_record(json.loads(path.read_text(encoding="utf-8")), path)
    except (OSError, ValueError):  # unreadable, not JSON, or not a result (RecordError is a ValueError)
        return None
    if expected_hash is not None and record.get("config_hash") != expected_hash:
        return None
    return record


def find_computed(results_dir: Path, expected_hash: str, exclude: Path) -> tuple[Path, dict] | None:
    """A successful result of exactly this run config written for another spec or variant
    (identical configs in two specs are computed once)."""
    for path in sorted(results_dir.glob(f"*/*/*--{expected_hash[:8]}.json")):
        if path == exclude:
            continue
        record = read_result(path, expected_hash)
        if record is not None and record["status"] == "ok":
            return path, record
    return None


def stale_siblings(path: Path) -> list[Path]:
    """Results of the same variant and seed under another config hash (now stale)."""
    stem = path.name.rsplit("--", 1)[0]
    return [p for p in path.parent.glob(f"{stem}--*.json") if p != path]


def leftover_temp_files(directory: Path) -> list[Path]:
    return list(directory.glob(f".*{TMP_SUFFIX}")) if directory.exists() else []
