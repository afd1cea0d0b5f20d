"""itaclip: training-free open-vocabulary semantic segmentation with ITACLIP.

    import itaclip
    seg = itaclip.Segmenter(weights="ViT-B/16", preset="voc21")
    seg.set_vocabulary()
    result = seg.segment("photo.jpg")   # result.labels, result.probs, result.class_names
"""

from .config import PRESETS, SegmenterConfig, build_config, get_preset, list_presets
from .errors import ItaclipError
from .models import list_models, load_clip
from .predictor import SegmentationResult, Segmenter
from .vocabulary import Vocabulary, load_aux_texts, load_classes

__version__ = "0.1.0"

__all__ = [
    "PRESETS", "SegmenterConfig", "build_config", "get_preset", "list_presets", "ItaclipError",
    "list_models", "load_clip", "SegmentationResult", "Segmenter", "Vocabulary", "load_aux_texts",
    "load_classes", "__version__",
]
