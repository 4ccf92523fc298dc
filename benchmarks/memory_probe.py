"""Peak resident memory of one forward pass, measured in a fresh process (Linux).

In a long-lived process the allocator keeps freed pages, so a later forward can run without
raising the peak resident set at all; a fresh process per model measures what that forward
needs: ``VmHWM`` after the forward minus ``VmRSS`` before it (model weights excluded).

    python -m benchmarks.memory_probe '{"name": "icnet", "branches": "sub124"}' 19 1024x2048
prints the peak in MiB.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import torch


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def probe(model_cfg: dict, num_classes: int, size: tuple[int, int]) -> float:
    from seg_core.registry import MODELS

    model = MODELS.build(
        model_cfg["name"], num_classes=num_classes, **{k: v for k, v in model_cfg.items() if k != "name"}
    ).eval()
    x = torch.randn(1, 3, *size)
    before = _status_kb("VmRSS")
    with torch.inference_mode():
        model(x)
    return (_status_kb("VmHWM") - before) / 1024


def peak_forward_memory_mb(
    model_cfg: dict, num_classes: int, size: tuple[int, int], timeout: float = 600
) -> float | None:
    """Run :func:`probe` in a fresh interpreter; None where /proc is unavailable or the probe fails."""
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.memory_probe",
                json.dumps(model_cfg),
                str(num_classes),
                f"{size[0]}x{size[1]}",
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return float(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


if __name__ == "__main__":
    cfg, classes, size = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    h, w = (int(v) for v in size.split("x"))
    print(f"{probe(cfg, classes, (h, w)):.1f}")
