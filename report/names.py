"""What a reader calls a metric: the names pages, figures and verdict sentences print instead
of the metric keys records store (``bf_3px`` is "boundary F at 3 px")."""

from __future__ import annotations

import re

RAW = "raw_"  # the metrics of the predictions before post-processing
METRIC_NAMES = {
    "miou": "mIoU",
    "pixel_acc": "pixel acc.",
    "mean_acc": "mean acc.",
    "boundary_miou": "boundary-band mIoU",
    "interior_miou": "interior mIoU",
    "boundary_pixel_acc": "boundary-band acc.",
    "interior_pixel_acc": "interior acc.",
    "boundary_mean_acc": "boundary-band mean acc.",
    "interior_mean_acc": "interior mean acc.",
}


# Metric keys made by pattern (a metric family's parameter in the key): the name a reader sees.
METRIC_PATTERNS = (
    (re.compile(r"bf_(\d+)px"), "boundary F at {0} px"),  # tolerance in the paper's pixels
    (re.compile(r"crop(\d+)_miou"), "mIoU, crop {0}"),  # crop factor in the paper's pixels
    (re.compile(r"([a-z]+)_miou"), "{0}-class mIoU"),  # a class group's mIoU (thin, small, large)
)


def metric_name(metric: str) -> str:
    """A metric key as a reader names it (``bf_3px``: "boundary F at 3 px"; unknown keys as they are)."""
    if metric.startswith(RAW):
        return f"{metric_name(metric[len(RAW) :])} before post-processing"
    if metric in METRIC_NAMES:
        return METRIC_NAMES[metric]
    for pattern, name in METRIC_PATTERNS:
        match = pattern.fullmatch(metric)
        if match:
            return name.format(*match.groups())
    return metric
