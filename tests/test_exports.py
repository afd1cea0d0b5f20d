"""Round trips of the exports: each format decodes back to the label map exactly."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers.exports import decode_labelstudio_rle
from itaclip.engine.errors import ItaclipError
from itaclip.outputs.exports import (
    labelstudio_config,
    labelstudio_rle,
    normalize_formats,
    safe_name,
    write_exports,
)

CLASSES = ["background", "cat", "traffic light", "sky/cloud", "unused"]


def _label_map(height=37, width=53, seed=0) -> np.ndarray:
    """Blocks, stripes and noise, with classes 0-3 present and 4 absent."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), dtype=np.int64)
    labels[5:20, 3:30] = 1
    labels[::7, :] = 2
    labels[25:, 40:] = 3
    noise = rng.random((height, width)) < 0.05
    labels[noise] = rng.integers(0, 4, noise.sum())
    return labels


# --- a plain Label Studio brush RLE decoder (rle-pack format), independent of the encoder ---------


def test_labelstudio_rle_known_bytes():
    # 1x2 mask [0, 255] -> RGBA values [0]*4 + [255]*4: two runs of length 4.
    rle = labelstudio_rle(np.array([[0, 1]]))
    bits = "".join(f"{b:08b}" for b in rle)
    header = f"{8:032b}" + f"{7:05b}" + "0010" + "0011" + "0111" + "1111"
    runs = "1" + "00" + "011" + "00000000" + "1" + "00" + "011" + "11111111"
    expected = header + runs
    assert bits.startswith(expected)
    assert set(bits[len(expected):]) <= {"0"} and 1 <= len(bits) - len(expected) <= 8


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (130, 700)])
def test_labelstudio_rle_round_trip_including_long_runs(shape):
    rng = np.random.default_rng(1)
    for mask in (rng.random(shape) > 0.5, np.ones(shape, bool), np.zeros(shape, bool)):
        flat = decode_labelstudio_rle(labelstudio_rle(mask))
        assert flat.shape == (mask.size * 4,)
        np.testing.assert_array_equal(flat.reshape(*shape, 4)[:, :, 3] > 0, mask)
        # all four channels carry the mask
        assert (flat.reshape(-1, 4) == flat.reshape(-1, 4)[:, :1]).all()


def test_coco_round_trip_with_pycocotools(tmp_path):
    coco_api = pytest.importorskip("pycocotools.coco")
    labels = _label_map()
    probs = np.random.default_rng(2).random((len(CLASSES),) + labels.shape).astype(np.float32)
    paths = write_exports(labels, CLASSES, "img", tmp_path, ["coco"], image_file="img.jpg", probs=probs)
    assert paths == {"coco": tmp_path / "img.coco.json"}

    coco = coco_api.COCO(str(paths["coco"]))
    assert coco.getImgIds() == [1]
    image = coco.loadImgs(1)[0]
    assert (image["height"], image["width"], image["file_name"]) == (*labels.shape, "img.jpg")
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CLASSES
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert sorted(a["category_id"] - 1 for a in anns) == [0, 1, 2, 3]  # one per class present

    decoded = np.full(labels.shape, -1)
    for ann in anns:
        assert isinstance(ann["segmentation"]["counts"], str)
        mask = coco.annToMask(ann).astype(bool)
        c = ann["category_id"] - 1
        assert ann["area"] == mask.sum() and ann["iscrowd"] == 0
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["score"] == pytest.approx(probs[c][labels == c].mean(), abs=1e-5)
        assert (decoded[mask] == -1).all()  # regions do not overlap
        decoded[mask] = c
    np.testing.assert_array_equal(decoded, labels)


def test_labelstudio_round_trip(tmp_path):
    labels = _label_map(seed=3)
    path = write_exports(labels, CLASSES, "img", tmp_path, "labelstudio", image_file="/data/img.jpg")["labelstudio"]
    tasks = json.loads(path.read_text())
    assert isinstance(tasks, list) and len(tasks) == 1
    task = tasks[0]
    assert task["data"] == {"image": "/data/img.jpg"}
    results = task["predictions"][0]["result"]
    assert len(results) == 4
    decoded = np.full(labels.shape, -1)
    for result in results:
        assert result["type"] == "brushlabels"
        assert (result["from_name"], result["to_name"]) == ("tag", "image")
        h, w = result["original_height"], result["original_width"]
        assert (h, w) == labels.shape
        value = result["value"]
        assert value["format"] == "rle" and all(isinstance(v, int) and 0 <= v < 256 for v in value["rle"])
        (name,) = value["brushlabels"]
        mask = decode_labelstudio_rle(value["rle"]).reshape(h, w, 4)[:, :, 3] > 0
        assert (decoded[mask] == -1).all()
        decoded[mask] = CLASSES.index(name)
    np.testing.assert_array_equal(decoded, labels)
    config = labelstudio_config(CLASSES)
    assert '<BrushLabels name="tag" toName="image">' in config and '<Label value="sky/cloud"/>' in config


def test_mask_pngs_round_trip_and_overwrite(tmp_path):
    labels = _label_map(seed=4)
    out = write_exports(labels, CLASSES, "img", tmp_path, ["masks"])["masks"]
    assert out == tmp_path / "img_masks"
    names = sorted(os.listdir(out))
    assert names == ["0_background.png", "1_cat.png", "2_traffic_light.png", "3_sky_cloud.png"]
    decoded = np.full(labels.shape, -1)
    for name in names:
        mask = np.asarray(Image.open(out / name))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert (decoded[mask == 255] == -1).all()
        decoded[mask == 255] = int(name.split("_")[0])
    np.testing.assert_array_equal(decoded, labels)

    # a second export replaces the folder whole: no stale masks, no temporary leftovers
    write_exports(np.ones_like(labels), CLASSES, "img", tmp_path, ["masks"])
    assert sorted(os.listdir(out)) == ["1_cat.png"]
    assert sorted(os.listdir(tmp_path)) == ["img_masks"]


def test_all_formats_at_once_leave_no_temporaries(tmp_path):
    labels = _label_map()
    paths = write_exports(labels, CLASSES, "a b", tmp_path, "coco,labelstudio,masks")
    assert set(paths) == {"coco", "labelstudio", "masks"}
    assert sorted(os.listdir(tmp_path)) == ["a b.coco.json", "a b.labelstudio.json", "a b_masks"]


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ItaclipError, match="unknown export format"):
        normalize_formats(["coco", "yolo"])
    with pytest.raises(ItaclipError, match=r"values must be in \[0, 1\]"):
        write_exports(np.array([[0, 2]]), ["a", "b"], "x", tmp_path, "masks")
    with pytest.raises(ItaclipError, match="must be a non-empty"):
        write_exports(np.zeros((2, 2, 2), int), ["a"], "x", tmp_path, "masks")
    with pytest.raises(ItaclipError, match="integers"):
        write_exports(np.zeros((2, 2)), ["a"], "x", tmp_path, "masks")
    assert os.listdir(tmp_path) == []


def test_safe_name():
    assert safe_name("traffic light") == "traffic_light"
    assert safe_name("../etc/passwd") == "etc_passwd"
    assert safe_name("ünïcode") == "n_code"
    assert safe_name("///") == "class"
