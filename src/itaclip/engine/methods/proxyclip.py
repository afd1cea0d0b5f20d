"""ProxyCLIP (Lan et al., ECCV 2024): CLIP's last-block values mixed by DINO's feature correspondence."""

from __future__ import annotations

from .base import Method, ProxyAttention, figures
from .codebases import GUIDED_DEFAULTS, guided_presets

#: ProxyCLIP's class lists (its configs' files; those equal to an existing list reuse it).
PROXYCLIP_LISTS = dict(voc21="proxyclip_voc21", context60="sclip_context60", coco_object="proxyclip_coco_object",
                       voc20="clearclip_voc20", context59="sclip_context59", coco_stuff="sclip_coco_stuff",
                       ade20k="sclip_ade20k", cityscapes="sclip_cityscapes")

METHOD = Method(
    name="proxyclip",
    title="ProxyCLIP",
    paper="Lan et al., ProxyCLIP: Proxy Attention Improves CLIP for Open-Vocabulary Segmentation (ECCV 2024)",
    code="github.com/mc-lan/ProxyCLIP @ e7b767f",
    changes="last block: only its values, upsampled to DINO ViT-B/8's grid and mixed by the softmax of DINO's "
            "final-feature cosines (shifted by beta x their mean, scaled by gamma, negatives masked); no residual, "
            "no MLP; windows padded to multiples of 56",
    encoder=ProxyAttention(),
    pad_to=56,
    reads=("guide_weights", "proxy_beta", "proxy_gamma"),
    exclusive=("proxy_beta", "proxy_gamma"),
    exclusive_scope="ProxyCLIP's proxy attention",
    guide=True,
    whole_image="original",
    defaults=GUIDED_DEFAULTS,
    presets=guided_presets("ProxyCLIP config", PROXYCLIP_LISTS),
    published=figures("ProxyCLIP paper (ECCV 2024), Table 1: OpenAI CLIP ViT-B/16 with DINO ViT-B/8", voc21=61.3,
                      context60=35.3, coco_object=37.5, voc20=80.3, context59=39.1, coco_stuff=26.5,
                      cityscapes=38.1, ade20k=20.2),
)
