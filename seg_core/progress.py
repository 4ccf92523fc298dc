"""Progress bars that show on a terminal and stay quiet in CI, logs and pipes."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def interactive() -> bool:
    """True when stderr is a terminal and no ``CI`` / ``SEGBENCH_QUIET`` variable is set."""
    if os.environ.get("CI") or os.environ.get("SEGBENCH_QUIET"):
        return False
    return sys.stderr.isatty()


def progress(total: int, desc: str, *, unit: str = "step", position: int | None = None, leave: bool = False) -> tqdm:
    """A tqdm bar (rate and ETA included) disabled when not :func:`interactive`."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        position=position,
        leave=leave,
        disable=not interactive(),
        dynamic_ncols=True,
        mininterval=0.5,
    )
