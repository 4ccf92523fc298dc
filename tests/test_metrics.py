"""Metrics on hand-made cases: confusion matrix, mIoU over present classes, ignore, band."""

import math

import pytest
import torch

from seg_core.losses import IGNORE_INDEX
from seg_core.metrics import (
    ConfusionMatrix,
    SegmentationEvaluator,
    band_width_for,
    boundary_band,
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


def _reference_band(label: torch.Tensor, width: float) -> torch.Tensor:
    """Brute force, independent of the implementation: every pixel edge between 4-neighbours
    with different non-void labels is a unit segment; a labelled pixel is in the band when its
    centre is within ``width`` of one of them (no void here, so no filling is involved)."""
    h, w = label.shape
    segments = []  # ((y0, x0), (y1, x1)) in pixel-corner coordinates
    for i in range(h):
        for j in range(w):
            if j + 1 < w and label[i, j] != label[i, j + 1]:
                segments.append(((i, j + 1), (i + 1, j + 1)))
            if i + 1 < h and label[i, j] != label[i + 1, j]:
                segments.append(((i + 1, j), (i + 1, j + 1)))
    band = torch.zeros(h, w, dtype=torch.bool)
    for p in range(h):
        for q in range(w):
            cy, cx = p + 0.5, q + 0.5
            for (y0, x0), (y1, x1) in segments:
                dy = max(y0 - cy, 0.0, cy - y1)
                dx = max(x0 - cx, 0.0, cx - x1)
                if dy * dy + dx * dx <= width * width + 1e-9:
                    band[p, q] = True
                    break
    return band


@pytest.mark.parametrize("width", [0.5, 0.875, 1.75, 2.5, 3.0])
def test_band_is_the_distance_to_a_straight_edge(width):
    label = torch.zeros(1, 12, 16, dtype=torch.long)
    label[0, :, 8:] = 1  # the change is the pixel edge at x = 8; column c's centre is |c + 0.5 - 8| away
    band = boundary_band(label, width)[0]
    for c in range(16):
        distance = abs(c + 0.5 - 8)
        assert bool(band[:, c].all()) == (distance <= width) and bool(band[:, c].any()) == (distance <= width), (
            c,
            width,
        )
    torch.testing.assert_close(band, _reference_band(label[0], width))


@pytest.mark.parametrize("width", [0.875, 1.75, 3.0])
def test_band_along_a_diagonal_edge_matches_the_geometry(width):
    yy, xx = torch.meshgrid(torch.arange(14), torch.arange(14), indexing="ij")
    label = (xx > yy).long()[None]  # a staircase edge
    band = boundary_band(label, width)[0]
    torch.testing.assert_close(band, _reference_band(label[0], width))
    # the pixels on the diagonal itself touch the staircase (0.5 px), those 3 cells away do not at w < 2.1
    assert band[5, 5] and band[7, 6] and not (width < 2.1 and band[9, 6])


def test_band_on_random_labels_matches_brute_force():
    torch.manual_seed(0)
    label = torch.randint(0, 3, (1, 9, 9)).repeat_interleave(2, 1).repeat_interleave(2, 2)
    for width in (0.875, 1.75):
        torch.testing.assert_close(boundary_band(label, width)[0], _reference_band(label[0], width))


def test_padding_is_not_a_boundary_and_a_void_outline_splits_in_the_middle():
    label = torch.zeros(1, 16, 16, dtype=torch.long)
    label[0, 4:12, 2:7] = 1  # an object touching nothing
    padded = torch.full((1, 24, 24), IGNORE_INDEX)
    padded[:, :16, :16] = label  # padded to 24 px: the image border is no label change
    band = boundary_band(padded, 1.75)
    torch.testing.assert_close(band[0, :16, :16], boundary_band(label, 1.75)[0])
    assert not band[0, :16, 15].any() and not band[0, 15, :].any()  # the border next to the padding
    assert not band[0, 16:].any() and not band[0, :, 16:].any()  # padding is never in the band
    # VOC-style: a 3 px void outline (x in [4, 7)) between background and object. Filling it from
    # both sides puts the change inside it, at x = 5 (the tie at the middle pixel goes to the
    # larger label): the labelled pixels are 1.5, 2.5 (background) and 2.5, 3.5 (object) px away.
    voc = torch.zeros(1, 1, 12, dtype=torch.long)
    voc[0, 0, 4:7] = IGNORE_INDEX
    voc[0, 0, 7:] = 1
    assert boundary_band(voc, 2.5)[0, 0].tolist() == [False, False, True, True] + [False] * 3 + [True] + [False] * 4
    assert not boundary_band(voc, 1.0)[0, 0].any()


def test_band_width_scaling():
    assert band_width_for(512) == 7 and band_width_for(64) == 0.875 and band_width_for(128) == 1.75
    assert band_width_for(1024, 2048) == pytest.approx(7 * (1024 * 2048) ** 0.5 / 512)
    # at 64 px the band is the pixels next to a change and diagonal to a corner, not two rows deep
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[0, 4:, 4:] = 1
    band = boundary_band(label, band_width_for(64))[0]
    assert band[3, 3] and band[4, 4] and band[3, 5] and band[4, 6] and not band[2, 5] and not band[5, 6]


def test_band_and_interior_partition_labelled_pixels():
    torch.manual_seed(0)
    label = torch.randint(0, 3, (2, 16, 16))
    label[0, :2] = 255
    pred = torch.randint(0, 3, (2, 16, 16))
    ev = SegmentationEvaluator(3, band_width=1)
    ev.update(pred, label)
    assert torch.equal(ev.band.matrix + ev.interior.matrix, ev.overall.matrix)
    assert not math.isnan(ev.summary()["boundary_miou"])
