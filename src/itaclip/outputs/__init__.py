"""The outputs wing: what a segmented image leaves on disk.

* :mod:`.writer` — one writer for an image's files (label PNG, overlay, probabilities, exports), used
  by ``itaclip segment`` and the demo, and the run manifest of an output folder;
* :mod:`.exports` — formats annotation tools import (COCO, Label Studio, mask PNGs);
* :mod:`.visualize` — overlays with a legend, probability heat maps.
"""
