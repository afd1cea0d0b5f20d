"""Segmentation metrics as pure functions on numpy arrays.

They follow MMSegmentation's ``IoUMetric``: per image, pixels whose ground truth is the ignore index
(255) are dropped and a ``num_classes × num_classes`` confusion matrix of integer pixel counts is
accumulated (rows: ground truth, columns: prediction). From the summed matrix:

* IoU_c  = TP_c / (GT_c + Pred_c − TP_c); a class with union 0 (absent from both ground truth and
  prediction over the whole set) is NaN and left out of the mean (``nanmean``);
* Acc_c  = TP_c / GT_c; a class absent from the ground truth is NaN;
* aAcc   = Σ TP / Σ GT (pixel accuracy); mIoU and mAcc are ``nanmean`` over classes.

Confusion matrices are ``int64`` so that sums over any split of the images (processes, resumed
runs) are exact.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..datasets.base import IGNORE_INDEX


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """The ``(num_classes, num_classes)`` int64 confusion matrix of one label map.

    ``cm[g, p]`` counts the pixels with ground truth ``g`` predicted as ``p``. Ground-truth pixels
    equal to ``ignore_index`` are skipped. A ground-truth or predicted label outside
    ``[0, num_classes)`` (other than ignored pixels) is an error: it means a wrong dataset/preset
    pairing, which must not be hidden.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    gt = gt.reshape(-1).astype(np.int64, copy=False)
    pred = pred.reshape(-1).astype(np.int64, copy=False)
    keep = gt != ignore_index
    gt = gt[keep]
    pred = pred[keep]
    if gt.size:
        if gt.min() < 0 or gt.max() >= num_classes:
            bad = np.unique(gt[(gt < 0) | (gt >= num_classes)])[:5].tolist()
            raise ValueError(
                f"ground-truth labels {bad} are outside 0..{num_classes - 1} (and not {ignore_index})"
            )
        if pred.min() < 0 or pred.max() >= num_classes:
            bad = np.unique(pred[(pred < 0) | (pred >= num_classes)])[:5].tolist()
            raise ValueError(f"predicted labels {bad} are outside 0..{num_classes - 1}")
    counts = np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def intersection_and_union(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (intersection, union, predicted area, ground-truth area) of a confusion matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    intersect = np.diag(cm).copy()
    area_gt = cm.sum(axis=1)
    area_pred = cm.sum(axis=0)
    union = area_gt + area_pred - intersect
    return intersect, union, area_pred, area_gt


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    nz = den > 0
    out[nz] = num[nz] / den[nz]
    return out


def per_class_iou(cm: np.ndarray) -> np.ndarray:
    """IoU per class (fraction, not percent); NaN where the union is 0."""
    intersect, union, _, _ = intersection_and_union(cm)
    return _safe_ratio(intersect.astype(np.float64), union.astype(np.float64))


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall per class, TP / GT; NaN where the class has no ground-truth pixel."""
    intersect, _, _, area_gt = intersection_and_union(cm)
    return _safe_ratio(intersect.astype(np.float64), area_gt.astype(np.float64))


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or np.all(np.isnan(values)):
        return float("nan")
    return float(np.nanmean(values))


def mean_iou(cm: np.ndarray) -> float:
    """mIoU (fraction): nanmean of the per-class IoU (classes with union 0 excluded)."""
    return _nanmean(per_class_iou(cm))


def mean_accuracy(cm: np.ndarray) -> float:
    """mAcc (fraction): nanmean of the per-class accuracy."""
    return _nanmean(per_class_accuracy(cm))


def pixel_accuracy(cm: np.ndarray) -> float:
    """aAcc (fraction): correctly labelled pixels / labelled pixels; NaN with no labelled pixel."""
    cm = np.asarray(cm, dtype=np.int64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float("nan")


def summarize(cm: np.ndarray, class_names: Optional[list[str]] = None) -> dict:
    """All metrics of a confusion matrix in percent (as MMSegmentation reports them).

    Returns ``{"mIoU", "mAcc", "aAcc", "per_class": [{"class", "IoU", "Acc", "gt_pixels",
    "pred_pixels"}, ...]}``; NaN values become ``None`` so the dict is valid JSON.
    """
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class confusion matrix")
    iou = per_class_iou(cm)
    acc = per_class_accuracy(cm)
    _, _, area_pred, area_gt = intersection_and_union(cm)

    def pct(x: float):
        return None if np.isnan(x) else round(float(x) * 100.0, 4)

    return {
        "mIoU": pct(mean_iou(cm)),
        "mAcc": pct(mean_accuracy(cm)),
        "aAcc": pct(pixel_accuracy(cm)),
        "per_class": [
            {
                "class": names[c],
                "IoU": pct(iou[c]),
                "Acc": pct(acc[c]),
                "gt_pixels": int(area_gt[c]),
                "pred_pixels": int(area_pred[c]),
            }
            for c in range(n)
        ],
    }


def sparse_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, counts) of the non-zero cells: a compact, exact form for storage."""
    cm = np.asarray(cm, dtype=np.int64)
    rows, cols = np.nonzero(cm)
    return rows.astype(np.int32), cols.astype(np.int32), cm[rows, cols].astype(np.int64)


def dense_confusion(rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse of :func:`sparse_confusion`."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(
        cm,
        (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)),
        np.asarray(counts, dtype=np.int64),
    )
    return cm
