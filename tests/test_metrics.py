"""Metrics on hand-made cases: confusion matrix, mIoU over present classes, ignore, band."""

import math

import pytest
import torch

from seg_core.metrics import (
    ConfusionMatrix,
    SegmentationEvaluator,
    band_width_for,
    boundary_band,
    boundary_mask,
    summarize,
)


def test_confusion_matrix_counts_and_ignore():
    cm = ConfusionMatrix(3)
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 1, 2]])
    cm.update(pred, label)
    expected = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert torch.equal(cm.matrix, expected)


def test_miou_by_hand():
    # gt rows, pred columns. class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: TP 2, FP 1 -> 2/3; class 2: TP 1, FN 1 -> 1/2
    m = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    s = summarize(m)
    assert s["per_class_iou"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert s["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert s["pixel_acc"] == pytest.approx(4 / 6)
    assert s["mean_acc"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)


def test_absent_class_is_excluded_not_zero():
    m = torch.tensor([[3, 0, 0], [0, 1, 0], [0, 0, 0]])  # class 2 neither in gt nor predicted
    s = summarize(m)
    assert s["per_class_iou"][2] is None
    assert s["miou"] == pytest.approx(1.0)


def test_class_predicted_but_absent_counts_as_zero():
    m = torch.tensor([[2, 1], [0, 0]])  # class 1 predicted once, never in gt
    s = summarize(m)
    assert s["per_class_iou"] == pytest.approx([2 / 3, 0.0])
    assert s["miou"] == pytest.approx(1 / 3)


def test_one_matrix_over_the_dataset_not_per_image_mean():
    ev = SegmentationEvaluator(2)
    ev.update(torch.tensor([[1, 1, 1, 1]]), torch.tensor([[1, 1, 1, 1]]))  # image A: perfect
    ev.update(torch.tensor([[0, 0, 0, 0]]), torch.tensor([[1, 0, 0, 0]]))  # image B
    # global: class0 TP 3 FN 0 FP 1 -> 3/4; class1 TP 4 FN 1 -> 4/5
    assert ev.summary()["miou"] == pytest.approx((3 / 4 + 4 / 5) / 2)


def test_out_of_range_label_rejected():
    with pytest.raises(ValueError, match="outside"):
        ConfusionMatrix(2).update(torch.tensor([0]), torch.tensor([5]))


def test_boundary_mask_and_band():
    label = torch.zeros(1, 9, 9, dtype=torch.long)
    label[0, 3:6, 3:6] = 1
    edge = boundary_mask(label)[0]
    assert edge[3, 3] and edge[2, 3] and not edge[4, 4] and not edge[0, 0]
    assert boundary_band(label, 0)[0].sum() == edge.sum()
    band2 = boundary_band(label, 2)[0]
    assert band2[4, 4] and band2[0, 4] and not band2[0, 0]  # (0,0) is sqrt(8) > 2 from the edge pixel (2,2)


def test_band_excludes_ignore_and_void_outline_is_boundary():
    label = torch.tensor([[[0, 0, 255, 1, 1]]])
    band = boundary_band(label, 0)
    assert band.tolist() == [[[False, True, False, True, False]]]


def test_band_width_scaling():
    assert band_width_for(512) == 7 and band_width_for(64) == 1 and band_width_for(128) == 2


def test_band_and_interior_partition_labelled_pixels():
    torch.manual_seed(0)
    label = torch.randint(0, 3, (2, 16, 16))
    label[0, :2] = 255
    pred = torch.randint(0, 3, (2, 16, 16))
    ev = SegmentationEvaluator(3, band_width=1)
    ev.update(pred, label)
    assert torch.equal(ev.band.matrix + ev.interior.matrix, ev.overall.matrix)
    assert not math.isnan(ev.summary()["boundary_miou"])
