"""The fully connected CRF of DeepLab (Chen et al. v1 Sec. 4, v2 Sec. 3.4; Krähenbühl and Koltun
2011) as an evaluation post-processor (``eval.postprocess = {type = "dense_crf", ...}``).

Mean-field inference of a CRF whose unary term is ``-log`` of the network's class probabilities
at image resolution and whose pairwise term has two Gaussian kernels: a *smoothness* kernel on
pixel positions (``pos_w``, ``pos_xy_std``) and an *appearance* (bilateral) kernel on positions
and RGB colours (``bi_w``, ``bi_xy_std``, ``bi_rgb_std``), with Potts compatibility and
``iterations`` steps. DeepLab's released ResNet-101 values are 10 iterations, pos 3 / 1,
bilateral 4 / 67 / 3, for ~500 px VOC images; spatial standard deviations are in pixels, so a
spec at another image size scales them (colours are 0-255 either way).

The CRF must see the raw uint8 RGB image (C-contiguous, height x width x 3), not the normalised
tensor: the batch's ``image`` is exactly that. The permutohedral-lattice implementation is the
maintained binding ``pydensecrf2`` (an optional extra: ``pip install "segbench[crf]"``; it builds
from source with a C++ compiler in about a minute). ``workers > 1`` runs images in that many
processes. For a fixed input the result is deterministic.
"""

from __future__ import annotations

import numpy as np
import torch

from seg_core.registry import POSTPROCESSORS, ConfigError

INSTALL = (
    'the dense CRF needs the optional extra "crf": pip install "segbench[crf]" (or pip install pydensecrf2; '
    "it builds from source with a C++ compiler in about a minute)"
)
OPTIONS = {
    "iterations": int,
    "pos_w": float,
    "pos_xy_std": float,
    "bi_w": float,
    "bi_xy_std": float,
    "bi_rgb_std": float,
    "workers": int,
}


def available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def _check(options: dict) -> None:
    """Spec-time check (before any training): the binding is installed, the options are sane."""
    if not available():
        raise ConfigError("type", INSTALL)
    for key, value in options.items():
        if key not in OPTIONS:
            raise ConfigError(key, f"unknown dense_crf option; expected one of {sorted(OPTIONS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < (1 if OPTIONS[key] is int else 0):
            raise ConfigError(key, f"expected a number {'>= 1' if OPTIONS[key] is int else '>= 0'}, got {value!r}")


def crf_image(probs: np.ndarray, image: np.ndarray, params: dict) -> np.ndarray:
    """Mean-field CRF of one image: ``probs`` (C, H, W) float, ``image`` (H, W, 3) uint8 ->
    the CRF's marginals (C, H, W), float32."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    c, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.astype(np.float32), clip=1e-8)))
    crf.addPairwiseGaussian(sxy=params["pos_xy_std"], compat=params["pos_w"])
    crf.addPairwiseBilateral(
        sxy=params["bi_xy_std"], srgb=params["bi_rgb_std"], rgbim=np.ascontiguousarray(image), compat=params["bi_w"]
    )
    return np.asarray(crf.inference(params["iterations"]), dtype=np.float32).reshape(c, h, w)


def _crf_job(args) -> np.ndarray:
    return crf_image(*args)


_POOLS: dict[int, object] = {}


def _pool(workers: int):
    """A process pool kept for the process's life (spawned, so it is safe under any runner)."""
    if workers not in _POOLS:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        _POOLS[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    return _POOLS[workers]


@POSTPROCESSORS.register("dense_crf", check=_check)
def dense_crf(
    *,
    iterations: int = 10,
    pos_w: float = 3.0,
    pos_xy_std: float = 1.0,
    bi_w: float = 4.0,
    bi_xy_std: float = 67.0,
    bi_rgb_std: float = 3.0,
    workers: int = 1,
):
    """DeepLab's dense CRF; the defaults are its released ResNet-101 values (for ~500 px images)."""
    _check(
        {
            "iterations": iterations,
            "pos_w": pos_w,
            "pos_xy_std": pos_xy_std,
            "bi_w": bi_w,
            "bi_xy_std": bi_xy_std,
            "bi_rgb_std": bi_rgb_std,
            "workers": workers,
        }
    )
    params = {
        "iterations": iterations,
        "pos_w": pos_w,
        "pos_xy_std": pos_xy_std,
        "bi_w": bi_w,
        "bi_xy_std": bi_xy_std,
        "bi_rgb_std": bi_rgb_std,
    }

    def apply(probs: torch.Tensor, batch) -> torch.Tensor:
        p = probs.detach().float().cpu().numpy()
        images = batch["image"].permute(0, 2, 3, 1).contiguous().cpu().numpy()  # raw uint8, H x W x 3
        jobs = [(p[i], images[i], params) for i in range(len(p))]
        if workers > 1 and len(jobs) > 1:
            out = list(_pool(workers).map(_crf_job, jobs))
        else:
            out = [_crf_job(job) for job in jobs]
        return torch.from_numpy(np.stack(out)).to(probs.device)

    return apply
