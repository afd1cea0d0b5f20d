"""Metrics against an independent, plain computation (explicit per-class loops over pixels)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from itaclip.evaluation import metrics


def plain_metrics(preds, gts, num_classes, ignore=255):
    """Per-class IoU and accuracy by counting pixels class by class (no confusion matrix)."""
    inter = [0] * num_classes
    union = [0] * num_classes
    gt_area = [0] * num_classes
    correct = labelled = 0
    for pred, gt in zip(preds, gts, strict=True):
        valid = gt != ignore
        for c in range(num_classes):
            p = (pred == c) & valid
            g = (gt == c) & valid
            inter[c] += int(np.sum(p & g))
            union[c] += int(np.sum(p | g))
            gt_area[c] += int(np.sum(g))
        correct += int(np.sum((pred == gt) & valid))
        labelled += int(np.sum(valid))
    iou = [inter[c] / union[c] if union[c] else math.nan for c in range(num_classes)]
    acc = [inter[c] / gt_area[c] if gt_area[c] else math.nan for c in range(num_classes)]

    def nanmean(values):
        kept = [v for v in values if not math.isnan(v)]
        return sum(kept) / len(kept) if kept else math.nan

    return iou, acc, nanmean(iou), nanmean(acc), correct / labelled


def random_pair(rng, shape, num_classes, absent=(), pred_only=(), ignore_fraction=0.2):
    """A prediction / ground-truth pair with ignored pixels, classes absent from both maps, and
    classes that appear only in the prediction."""
    present = [c for c in range(num_classes) if c not in absent and c not in pred_only]
    gt = rng.choice(present, size=shape).astype(np.uint8)
    gt[rng.random(shape) < ignore_fraction] = 255
    pred_classes = [c for c in range(num_classes) if c not in absent]
    pred = rng.choice(pred_classes, size=shape).astype(np.uint8)
    # Make predictions partly right so IoUs are not all tiny.
    agree = rng.random(shape) < 0.4
    pred[agree & (gt != 255)] = gt[agree & (gt != 255)]
    return pred, gt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_plain_computation(seed):
    rng = np.random.default_rng(seed)
    num_classes = 9
    absent, pred_only = (3, 7), (5,)
    pairs = [
        random_pair(rng, (rng.integers(5, 40), rng.integers(5, 40)), num_classes, absent, pred_only)
        for _ in range(6)
    ]
    cm = sum(metrics.confusion_matrix(p, g, num_classes) for p, g in pairs)
    assert cm.dtype == np.int64
    iou, acc, miou, macc, aacc = plain_metrics([p for p, _ in pairs], [g for _, g in pairs], num_classes)

    got_iou = metrics.per_class_iou(cm)
    got_acc = metrics.per_class_accuracy(cm)
    for c in range(num_classes):
        if math.isnan(iou[c]):
            assert np.isnan(got_iou[c])
        else:
            assert got_iou[c] == pytest.approx(iou[c], abs=1e-12)
        if math.isnan(acc[c]):
            assert np.isnan(got_acc[c])
        else:
            assert got_acc[c] == pytest.approx(acc[c], abs=1e-12)
    # Absent from both maps → NaN, excluded from the mean; prediction-only → IoU 0, counted.
    assert np.isnan(got_iou[3]) and np.isnan(got_iou[7])
    assert got_iou[5] == 0.0 and np.isnan(got_acc[5])
    assert metrics.mean_iou(cm) == pytest.approx(miou, abs=1e-12)
    assert metrics.mean_accuracy(cm) == pytest.approx(macc, abs=1e-12)
    assert metrics.pixel_accuracy(cm) == pytest.approx(aacc, abs=1e-12)

    summary = metrics.summarize(cm, [f"c{i}" for i in range(num_classes)])
    assert summary["mIoU"] == pytest.approx(100 * miou, abs=1e-3)
    assert summary["per_class"][3]["IoU"] is None
    assert summary["per_class"][5]["IoU"] == 0.0


def test_confusion_matrix_layout_and_ignore():
    gt = np.array([[0, 0, 1], [1, 255, 2]], dtype=np.uint8)
    pred = np.array([[0, 1, 1], [2, 2, 2]], dtype=np.uint8)
    cm = metrics.confusion_matrix(pred, gt, 3)
    expected = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(cm, expected)
    # By hand: IoU0 = 1/2, IoU1 = 1/3, IoU2 = 1/2 ; Acc = 1/2, 1/2, 1 ; aAcc = 3/5.
    np.testing.assert_allclose(metrics.per_class_iou(cm), [1 / 2, 1 / 3, 1 / 2])
    np.testing.assert_allclose(metrics.per_class_accuracy(cm), [1 / 2, 1 / 2, 1])
    assert metrics.pixel_accuracy(cm) == pytest.approx(3 / 5)


def test_accumulation_is_exact_and_order_free():
    rng = np.random.default_rng(5)
    pairs = [random_pair(rng, (17, 23), 6) for _ in range(5)]
    per_image = [metrics.confusion_matrix(p, g, 6) for p, g in pairs]
    whole = metrics.confusion_matrix(
        np.concatenate([p.ravel() for p, _ in pairs]), np.concatenate([g.ravel() for _, g in pairs]), 6
    )
    np.testing.assert_array_equal(sum(per_image), whole)
    np.testing.assert_array_equal(sum(per_image[::-1]), whole)
    # Sharded sums (as torchrun ranks do) add up to the same integers.
    np.testing.assert_array_equal(sum(per_image[0::2]) + sum(per_image[1::2]), whole)


def test_sparse_round_trip():
    rng = np.random.default_rng(3)
    pred, gt = random_pair(rng, (30, 30), 12, absent=(4,))
    cm = metrics.confusion_matrix(pred, gt, 12)
    rows, cols, counts = metrics.sparse_confusion(cm)
    np.testing.assert_array_equal(metrics.dense_confusion(rows, cols, counts, 12), cm)


def test_empty_and_all_ignored():
    cm = metrics.confusion_matrix(np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8), 3)
    assert cm.sum() == 0
    assert np.isnan(metrics.mean_iou(cm)) and np.isnan(metrics.pixel_accuracy(cm))
    assert metrics.summarize(cm)["mIoU"] is None


def test_errors():
    with pytest.raises(ValueError, match="shape"):
        metrics.confusion_matrix(np.zeros((2, 3)), np.zeros((3, 2)), 2)
    with pytest.raises(ValueError, match="ground-truth labels \\[7\\]"):
        metrics.confusion_matrix(np.zeros((2, 2), np.uint8), np.full((2, 2), 7, np.uint8), 3)
    with pytest.raises(ValueError, match="predicted labels \\[9\\]"):
        metrics.confusion_matrix(np.full((2, 2), 9, np.uint8), np.zeros((2, 2), np.uint8), 3)
    # Ignored ground truth may sit under any prediction.
    metrics.confusion_matrix(np.full((2, 2), 9, np.uint8), np.full((2, 2), 255, np.uint8), 3)
