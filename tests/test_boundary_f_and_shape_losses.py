"""Gated-SCNN's boundary F-score and losses on hand-made cases with known answers."""

import math

import numpy as np
import pytest
import torch

from seg_core.boundary_f import (
    PAPER_DIAGONAL,
    PAPER_TOLERANCES,
    BoundaryFScore,
    boundary,
    boundary_f,
    class_boundaries,
    tolerance_px,
)
from seg_core.shape_losses import balanced_bce, boundary_regularized_ce, boundary_target, dual_task


def _halves(h: int, w: int, column: int) -> torch.Tensor:
    """Class 0 left of ``column``, class 1 from it on: one straight vertical boundary."""
    label = torch.zeros(h, w, dtype=torch.long)
    label[:, column:] = 1
    return label


def _score(pred: torch.Tensor, gt: torch.Tensor, tolerances=(1, 2, 3, 4)) -> dict:
    """Tolerances given in px of this image (the reference diagonal is the image's own)."""
    diagonal = math.hypot(*gt.shape[-2:])
    metric = BoundaryFScore(2, tolerances={t: t / diagonal for t in tolerances})
    metric.update(pred[None], {"label": gt[None]})
    return metric.summary()


def test_identical_maps_score_one():
    gt = _halves(20, 30, 12)
    assert set(_score(gt, gt).values()) == {1.0}


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_a_boundary_shifted_by_d_px_is_missed_below_tolerance_d_and_found_from_it(shift):
    gt = _halves(20, 30, 12)
    pred = _halves(20, 30, 12 + shift)
    scores = _score(pred, gt)
    for tolerance in (1, 2, 3, 4):
        assert scores[f"bf_{tolerance}px"] == (1.0 if tolerance >= shift else 0.0), (shift, tolerance)


def test_empty_prediction_and_empty_truth():
    empty = np.zeros((10, 10), dtype=bool)
    line = empty.copy()
    line[:, 4] = True
    assert boundary_f(empty, empty, 1) == 1.0  # nothing to find, nothing found
    assert boundary_f(empty, line, 1) == 0.0 and boundary_f(line, empty, 1) == 0.0
    # a class absent from both maps of an image scores 1 there (both boundaries empty)
    assert set(_score(torch.zeros(8, 8, dtype=torch.long), torch.zeros(8, 8, dtype=torch.long)).values()) == {1.0}


def test_void_is_zeroed_before_the_boundary_and_its_outline_kept_as_the_official_code():
    gt = _halves(20, 30, 12)
    pred = _halves(20, 30, 20)  # 8 px off: wrong at every tolerance up to 4
    gt_void = gt.clone()
    gt_void[:, 10:22] = 255  # the truth is void where both boundaries run
    assert _score(pred, gt)["bf_4px"] == 0.0
    assert _score(pred, gt_void)["bf_4px"] == 1.0  # zeroed in both masks: the two boundaries coincide
    block = torch.zeros(12, 12, dtype=torch.long)
    block[4:8, 4:8] = 255  # a void square inside class 0
    bp, bg = class_boundaries(block.numpy(), block.numpy(), 0)
    on_void = bg & (block.numpy() == 255)
    assert on_void.any() and np.array_equal(bp, bg)  # the square's outline, part of it on void pixels, is kept


def test_the_boundary_is_x_xor_its_right_down_and_diagonal_shifts():
    x = np.zeros((5, 5), dtype=bool)
    x[2, 2] = True
    b = boundary(x)
    assert sorted(zip(*np.nonzero(b))) == [(1, 1), (1, 2), (2, 1), (2, 2)]  # the pixel and the three before it


def test_tolerances_are_the_official_fractions_of_the_diagonal():
    """0.00088 / 0.001875 / 0.00375 / 0.005 of the diagonal: 3 / 5 / 9 / 12 px on Cityscapes."""
    assert list(PAPER_TOLERANCES.values()) == [0.00088, 0.001875, 0.00375, 0.005]
    assert [tolerance_px(t, 1024, 2048) for t in PAPER_TOLERANCES.values()] == list(PAPER_TOLERANCES)
    assert [tolerance_px(t, 128, 256) for t in PAPER_TOLERANCES.values()] == [1, 1, 2, 2]
    assert [tolerance_px(t, 512, 1024) for t in PAPER_TOLERANCES.values()] == [2, 3, 5, 6]
    assert PAPER_DIAGONAL == pytest.approx(2289.73, abs=0.01)


def test_balanced_bce_matches_its_closed_form():
    target = torch.tensor([[[1, 0, 0, 255]]], dtype=torch.uint8)  # 1 positive, 2 negatives, 1 void
    logits = torch.tensor([[[[0.5, -1.0, 2.0, 9.0]]]])
    # positives weigh the negative fraction (2/3), negatives the positive fraction (1/3); mean over 3 valid
    expected = (2 / 3 * -math.log(torch.sigmoid(torch.tensor(0.5)).item()) + 1 / 3 * -math.log(1 - torch.sigmoid(torch.tensor(-1.0)).item())
                + 1 / 3 * -math.log(1 - torch.sigmoid(torch.tensor(2.0)).item())) / 3  # fmt: skip
    assert balanced_bce(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_the_dual_task_loss_is_zero_for_a_perfect_prediction_and_has_a_gradient_otherwise():
    label = _halves(12, 12, 5)[None]
    perfect = 60.0 * torch.nn.functional.one_hot(label, 2).permute(0, 3, 1, 2).float()
    generator = torch.Generator().manual_seed(0)
    assert dual_task(perfect, label, generator=generator).item() == pytest.approx(0.0, abs=1e-4)
    logits = torch.zeros(1, 2, 12, 12, requires_grad=True)
    loss = dual_task(logits, label, generator=generator)
    loss.backward()
    assert loss.item() > 0.1 and logits.grad.abs().sum() > 0


def test_the_boundary_target_and_the_regularised_cross_entropy():
    label = _halves(6, 8, 4)[None]
    label[0, 0, 0] = 255
    target = boundary_target({"label": label})
    assert target[0, 3].tolist() == [0, 0, 0, 1, 1, 0, 0, 0] and target[0, 0, 0] == 255
    logits = torch.zeros(1, 2, 6, 8, requires_grad=True)
    nowhere = torch.full((1, 1, 6, 8), -10.0)
    assert boundary_regularized_ce(logits, label, nowhere).item() == 0.0  # no confident boundary: no term
    on_edge = torch.where(target[:, None] == 1, 10.0, -10.0)
    loss = boundary_regularized_ce(logits, label, on_edge)
    assert loss.item() == pytest.approx(math.log(2)) and loss.requires_grad
