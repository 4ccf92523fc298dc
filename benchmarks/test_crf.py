"""The dense CRF's cost per image (DeepLab's post-processing), CPU: at the mini scale's 64 px and
5 classes, and at DeepLab's VOC test size (513 px, 21 classes), 10 mean-field iterations.
Skipped when the optional ``crf`` extra (pydensecrf2) is not installed."""

import numpy as np
import pytest
import torch

from benchmarks.conftest import calibration
from seg_core.crf import available, crf_image

PARAMS = {"iterations": 10, "pos_w": 3.0, "pos_xy_std": 1.0, "bi_w": 4.0, "bi_xy_std": 67.0, "bi_rgb_std": 3.0}


@pytest.mark.skipif(not available(), reason="needs the crf extra (pydensecrf2)")
@pytest.mark.parametrize("side,classes", [(64, 5), (513, 21)], ids=["mini-64px", "voc-513px"])
def test_dense_crf_per_image(benchmark, side, classes):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(classes), size=(side, side)).transpose(2, 0, 1).astype(np.float32)
    image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    params = dict(PARAMS, bi_xy_std=PARAMS["bi_xy_std"] * side / 513)
    benchmark.extra_info.update(
        {"image_side": side, "classes": classes, "unit": "seconds per image", **params}
        | calibration("cpu", torch.get_num_threads())
    )
    out = benchmark.pedantic(crf_image, args=(probs, image, params), rounds=5 if side > 100 else 20, warmup_rounds=1)
    assert out.shape == probs.shape and np.allclose(out.sum(0), 1, atol=1e-3)
