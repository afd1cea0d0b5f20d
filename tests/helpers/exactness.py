"""Engine vs naive reference, stage by stage: text features, refined similarity maps, probabilities and
labels (near-ties excused). Tolerances: fp32 rounding of batched vs one-at-a-time computation."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

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


class LargestDifferences:
    """The largest |probability difference| per method over a test module, printed at its end
    (seen with ``pytest -s``): how close to the reference the engine actually is."""

    def __init__(self, what: str):
        self.what = what
        self.largest: dict[str, float] = {}

    def record(self, method: str, difference: float) -> None:
        self.largest[method] = max(self.largest.get(method, 0.0), float(difference))

    def report(self) -> None:
        if self.largest:
            print(f"\nmax |probability difference| {self.what}:",
                  ", ".join(f"{m} {e:.2e}" for m, e in sorted(self.largest.items())))

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

def reference_maps(state: dict, image: np.ndarray, text: torch.Tensor, cfg) -> torch.Tensor:
    """naive_reference's refined similarity maps for an ITACLIP / first-zoo config."""
    return ref.reference_logits(
        state, image, text,
        short_side=cfg.short_side, crop=cfg.crop, stride=cfg.stride, pamr_steps=cfg.pamr_steps,
        pamr_dilations=cfg.pamr_dilations, image_engineering=cfg.image_engineering, views=cfg.views,
        lam=cfg.lam, attention=cfg.attention, remove_ffn=cfg.remove_ffn,
        intermediate_layers=cfg.intermediate_layers, method=cfg.method, gaussian_std=cfg.gaussian_std,
    )


#: Config fields naive_frontier.reference_logits takes (it delegates the first zoo to naive_reference).
FRONTIER_FIELDS = ("short_side", "crop", "stride", "pamr_steps", "pamr_dilations", "method", "tlp", "tlp_grid",
                   "logit_scale", "image_engineering", "views", "lam", "gaussian_std", "attention", "remove_ffn",
                   "intermediate_layers", "res_cls", "kk_weight", "sfr_thd", "sfr_weights", "rcs_weights",
                   "entity_decay")

#: Similarity maps refined by TLP. Its 25 float32 conjugate-gradient steps on a stiff system (data
#: weights down to 0.05², Laplacian weights up to 1) do not converge, and their rounding depends on the
#: input's last bits: uniform ±1e-7 noise on the maps moves TLP's output by up to 2.2e-4 on the tests'
#: 36×32 pooled grids (2000×; naive_frontier's check against PEARL's code saw 1.8e-5 at full size). The
#: end-to-end maps (inputs equal to ~2e-7) are therefore held to 5e-4; TLP itself equals the reference
#: to float rounding on identical inputs (test_frontier_exact.test_tlp_on_the_engines_own_maps).
TLP_LOGIT_ATOL = 5e-4


def frontier_maps(state: dict, image: np.ndarray, text: torch.Tensor, cfg, **options) -> torch.Tensor:
    """naive_frontier's refined maps for any config of any method (SFP's isolated outliers keep their
    value, this project's rule; ``options`` override)."""
    import naive_frontier as nf

    fields = {name: getattr(cfg, name) for name in FRONTIER_FIELDS}
    if cfg.sfr_thd is None:  # SFR off: its other fields mean nothing
        del fields["sfr_weights"], fields["entity_decay"]
    return nf.reference_logits(state, image, text, **fields, **{"isolated_outliers": "keep", **options})


def logit_tolerance(cfg) -> float:
    """The maps' tolerance for a config: float rounding, or TLP's (:data:`TLP_LOGIT_ATOL`)."""
    return TLP_LOGIT_ATOL if cfg.tlp else LOGIT_ATOL


def compare(seg, state: dict, image: np.ndarray, classes, has_background: bool,
            aux_texts: Optional[Sequence[str]] = None, *, vocabulary_set: bool = False,
            reference: Callable = reference_maps, logit_atol: float = LOGIT_ATOL) -> dict:
    """Run engine and reference on one image and assert every stage matches; returns diagnostics.

    ``reference(state, image, text, config)`` gives the reference's refined maps; ``logit_atol`` their
    tolerance (probabilities scale with it and the logit scale)."""
    cfg = seg.config
    prob_atol = max(PROB_ATOL, logit_atol * cfg.logit_scale / 2)
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
        ref_logits = reference(state, image, engine_text, cfg)
    with torch.inference_mode():
        engine_logits = seg.similarity_maps(image, seg.text_features).float().cpu()
    assert engine_logits.shape == ref_logits.shape == (len(query_class), *image.shape[:2])
    logit_err = float((engine_logits - ref_logits).abs().max())
    assert logit_err <= logit_atol, f"similarity maps differ by {logit_err:.3g} (> {logit_atol})"

    # 3. probabilities and labels of the public API
    ref_probs, ref_labels = ref.reference_postprocess(
        ref_logits, query_class, logit_scale=cfg.logit_scale, prob_thd=cfg.prob_thd, area_thd=cfg.area_thd,
        closing=cfg.closing,
    )
    result = seg.segment(image)
    assert result.probs.dtype == np.float32
    assert result.probs.shape == ref_probs.shape
    prob_err = float(np.abs(result.probs - ref_probs).max())
    assert prob_err <= prob_atol, f"probabilities differ by {prob_err:.3g} (> {prob_atol})"
    # Looser maps (logit_atol above LOGIT_ATOL): labels may differ only where the reference's top two are
    # closer than twice the probability difference actually seen.
    tie_tol = TIE_TOL if logit_atol <= LOGIT_ATOL else max(TIE_TOL, 2 * prob_err)
    assert_labels_match(result.labels, ref_labels, ref_probs, closing=cfg.closing, prob_thd=cfg.prob_thd,
                        tie_tol=tie_tol)
    assert len(result.class_names) == len(classes)
    return dict(logit_err=logit_err, prob_err=prob_err, labels=ref_labels, probs=ref_probs, options=options)
