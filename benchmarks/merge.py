"""Merge a pytest-benchmark JSON of some timing specs into the device's timing file.

    python -m benchmarks.merge NEW.json results/benchmarks/timing-cpu.json

Benchmarks of the specs measured in NEW replace theirs in the target (others are kept); the
target is replaced atomically, so an interrupted run leaves the previous measurements intact.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def merge(new: Path, target: Path) -> None:
    fresh = json.loads(new.read_text(encoding="utf-8"))
    measured = {spec for b in fresh["benchmarks"] for spec, _ in b.get("extra_info", {}).get("measures", [])}
    kept = []
    if target.exists():
        old = json.loads(target.read_text(encoding="utf-8"))
        kept = [
            b
            for b in old.get("benchmarks", [])
            if not {spec for spec, _ in b.get("extra_info", {}).get("measures", [])} & measured
        ]
    fresh["benchmarks"] = sorted(kept + fresh["benchmarks"], key=lambda b: b["name"])
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(fresh, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, target)


if __name__ == "__main__":
    merge(Path(sys.argv[1]), Path(sys.argv[2]))
