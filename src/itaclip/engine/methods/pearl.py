"""PEARL (Pei et al., 2026): Procrustes-aligned last-block attention and text-aware Laplacian
propagation of the similarity maps."""

from __future__ import annotations

from .base import Method, Procrustes, dataset_presets, figures
from .codebases import PEARL_DEFAULTS

METHOD = Method(
    name="pearl",
    title="PEARL",
    paper="Pei et al., PEARL: Geometry Aligns Semantics for Training-Free Open-Vocabulary Semantic Segmentation "
          "(arXiv 2603.21528)",
    code="github.com/PGSmall/PEARL @ c26062b (run.sh: attention 'pearl', TLP on)",
    changes="last block: keys rotated towards the queries (Procrustes, 5 Newton-Schulz steps) plus a centred k-k "
            "term, no residual, no MLP; similarity maps refined by a text-aware Laplacian propagation (TLP)",
    encoder=Procrustes(),
    reads=("kk_weight",),
    exclusive=("kk_weight",),
    exclusive_scope="PEARL's last block",
    unit_text=True,
    defaults=PEARL_DEFAULTS,
    presets=dataset_presets("PEARL config", "sclip_{}", voc21=dict(crop=0, prob_thd=0.1), voc20=dict(crop=0),
                            context60=dict(prob_thd=0.1), coco_object=dict(prob_thd=0.1), context59={},
                            coco_stuff={}, ade20k=dict(kk_weight=0.3),
                            cityscapes=dict(short_side=560, kk_weight=0.3, tlp_grid=224)),
    published=figures("PEARL README (github.com/PGSmall/PEARL @ c26062b), results table", voc21=64.1,
                      context60=35.1, coco_object=37.3, voc20=86.9, context59=38.6, coco_stuff=26.3, cityscapes=37.6,
                      ade20k=19.4),
)
