"""Engine vs naive reference, stage by stage: text features, refined similarity maps, probabilities and
labels (near-ties excused). Tolerances: fp32 rounding of batched vs one-at-a-time computation."""

from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np
import torch

import naive_reference as ref

LOGIT_ATOL = 2e-6

PROB_ATOL = 1e-5

TIE_TOL = 1e-5

#: At most this fraction of pixels may be excused as ties (else the comparison says too little).
MAX_TIE_FRACTION = 0.02

#: Reference options = SegmenterConfig fields of the same names.
REFERENCE_OPTIONS = ("alpha", "lam", "attention", "remove_ffn", "intermediate_layers", "image_engineering",
                     "views", "short_side", "crop", "stride", "pamr_steps", "pamr_dilations", "logit_scale",
                     "prob_thd", "area_thd", "closing")

# Vocabularies (names per class). Background sets are class 0.
VOC_LIKE = [("sky", "wall", "tree"), ("cat",), ("dog", "puppy"), ("car",)]

VOC_LIKE_AUX = ["a small domesticated carnivorous mammal with soft fur.",
                "a domesticated mammal that barks.",
                "a road vehicle with four wheels"]

OPEN = [("cat",), ("dog", "puppy"), ("grass",), ("car", "automobile")]

OPEN_AUX = ["a feline.", "a canine.", "green plants covering the ground.", "a motor vehicle."]

SMALL = [("cat",), ("dog",), ("sky",)]

def assert_labels_match(labels: np.ndarray, ref_labels: np.ndarray, ref_probs: np.ndarray, *, closing: bool,
                        prob_thd: float = 0.0, tie_tol: float = TIE_TOL,
                        max_tie_fraction: float = MAX_TIE_FRACTION) -> None:
    """Labels equal to the reference's, except at near-ties of the reference probabilities.

    A pixel is a near-tie when its top-2 class probabilities differ by less than ``tie_tol`` or its
    top probability is within ``tie_tol`` of ``prob_thd``; with ``closing`` every pixel within
    Chebyshev distance 2 of a near-tie is excused too.
    """
    assert labels.shape == ref_labels.shape, (labels.shape, ref_labels.shape)
    top2 = np.sort(ref_probs, axis=0)[-2:] if ref_probs.shape[0] > 1 else np.concatenate([ref_probs * 0, ref_probs])
    ambiguous = (top2[1] - top2[0]) < tie_tol
    if prob_thd > 0:
        ambiguous |= np.abs(top2[1] - prob_thd) < tie_tol
    if closing and ambiguous.any():
        ambiguous = cv2.dilate(ambiguous.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert ambiguous.mean() <= max_tie_fraction, f"{ambiguous.mean():.3%} of pixels are near-ties"
    bad = (labels.astype(np.int64) != ref_labels.astype(np.int64)) & ~ambiguous
    if bad.any():
        ys, xs = np.nonzero(bad)
        y, x = int(ys[0]), int(xs[0])
        raise AssertionError(
            f"{int(bad.sum())} of {bad.size} labels differ outside near-ties; first at (y={y}, x={x}): "
            f"engine {labels[y, x]}, reference {ref_labels[y, x]}, reference probs {ref_probs[:, y, x]}"
        )

def _class_strings(classes: Sequence[Sequence[str]]) -> list[str]:
    return [", ".join(names) for names in classes]

def compare(seg, state: dict, image: np.ndarray, classes, has_background: bool,
            aux_texts: Optional[Sequence[str]] = None, *, vocabulary_set: bool = False) -> dict:
    """Run engine and reference on one image and assert every stage matches; returns diagnostics."""
    cfg = seg.config
    options = {name: getattr(cfg, name) for name in REFERENCE_OPTIONS}
    if not vocabulary_set:
        seg.set_vocabulary(_class_strings(classes), aux_texts=list(aux_texts) if aux_texts else None,
                           has_background=has_background)

    # 1. text features
    ref_text, query_class = ref.reference_text_features(state, classes, has_background, aux_texts, cfg.alpha)
    engine_text = seg.text_features.detach().float().cpu()
    assert engine_text.shape == ref_text.shape
    torch.testing.assert_close(engine_text, ref_text, atol=1e-5, rtol=0)
    assert list(seg.vocabulary.query_class) == query_class

    # 2. refined similarity maps (same text features on both sides, so this stage is isolated)
    with torch.no_grad():
        ref_logits = ref.reference_logits(
            state, image, engine_text,
            short_side=cfg.short_side, crop=cfg.crop, stride=cfg.stride, pamr_steps=cfg.pamr_steps,
            pamr_dilations=cfg.pamr_dilations, image_engineering=cfg.image_engineering, views=cfg.views,
            lam=cfg.lam, attention=cfg.attention, remove_ffn=cfg.remove_ffn,
            intermediate_layers=cfg.intermediate_layers, method=cfg.method, gaussian_std=cfg.gaussian_std,
        )
    with torch.inference_mode():
        engine_logits = seg.similarity_maps(image, seg.text_features).float().cpu()
    assert engine_logits.shape == ref_logits.shape == (len(query_class), *image.shape[:2])
    logit_err = float((engine_logits - ref_logits).abs().max())
    assert logit_err <= LOGIT_ATOL, f"similarity maps differ by {logit_err:.3g} (> {LOGIT_ATOL})"

    # 3. probabilities and labels of the public API
    ref_probs, ref_labels = ref.reference_postprocess(
        ref_logits, query_class, logit_scale=cfg.logit_scale, prob_thd=cfg.prob_thd, area_thd=cfg.area_thd,
        closing=cfg.closing,
    )
    result = seg.segment(image)
    assert result.probs.dtype == np.float32
    assert result.probs.shape == ref_probs.shape
    prob_err = float(np.abs(result.probs - ref_probs).max())
    assert prob_err <= PROB_ATOL, f"probabilities differ by {prob_err:.3g} (> {PROB_ATOL})"
    assert_labels_match(result.labels, ref_labels, ref_probs, closing=cfg.closing, prob_thd=cfg.prob_thd)
    assert len(result.class_names) == len(classes)
    return dict(logit_err=logit_err, prob_err=prob_err, labels=ref_labels, probs=ref_probs, options=options)
