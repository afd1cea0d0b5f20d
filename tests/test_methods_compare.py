"""Several methods on one dataset (itaclip.evaluation.comparison): each runs its own preset and class list on
the shared harness, rows carry the published figures with their sources, and a row's mIoU is the
one an ordinary evaluation of that method gives."""

from __future__ import annotations

import json

import pytest

from helpers.datasets import build_for
from itaclip import ItaclipError, Segmenter
from itaclip.datasets import load_dataset
from itaclip.engine.methods import METHODS
from itaclip.evaluation.comparison import compare_methods, parse_methods, write_comparison
from itaclip.evaluation.loop import evaluate

pytestmark = pytest.mark.usefixtures("single_thread", "cheap_text_features")

FAST = dict(short_side=224, stride=224, pamr_steps=1)


def test_rows_are_each_methods_own_evaluation(tmp_path, tiny_ckpt):
    build_for("voc21", tmp_path / "data", n=2)
    dataset = load_dataset("voc21", tmp_path / "data")
    base = Segmenter(weights=str(tiny_ckpt), device="cpu")

    def run(segmenter, title):
        return evaluate(dataset, segmenter, tmp_path / "out", weights=str(tiny_ckpt), progress=False, title=title,
                        log=lambda message: None)

    rows = compare_methods(dataset, base, ["clip", "naclip"], run, FAST)
    assert [r["method"] for r in rows] == ["clip", "naclip"]
    assert rows[1]["published"] == 64.07 and "NACLIP README" in rows[1]["source"]
    assert rows[0]["published"] is None and all(r["complete"] and r["images"] == 2 for r in rows)

    # the naclip row is what evaluating NACLIP's VOC21 setting by itself gives (same run directory)
    alone = base.for_method("naclip", "voc21", **FAST)
    vocab = alone.set_vocabulary()
    assert (vocab.num_classes, len(vocab.queries)) == (21, 56)
    result = run(alone, "naclip alone")
    assert result.miou == rows[1]["ours"] and str(result.run_dir) == rows[1]["run_dir"]
    assert rows[0]["run_dir"] != rows[1]["run_dir"]

    markdown = write_comparison(tmp_path / "out", "voc21", dataset.spec.title, rows, len(dataset))
    text = markdown.read_text()
    assert "| NACLIP |" in text and "| 64.07 |" in text and "PARTIAL" not in text
    record = json.loads((tmp_path / "out" / "compare_voc21.json").read_text())
    assert [r["method"] for r in record["rows"]] == ["clip", "naclip"] and record["complete"] is True


def test_parse_methods():
    assert parse_methods("clip, sclip,naclip") == ["clip", "sclip", "naclip"]
    assert parse_methods("all") == list(METHODS)
    for bad, message in [("clip,segformer", "unknown method"), ("clip,clip", "twice"), (" , ", "no methods")]:
        with pytest.raises(ItaclipError, match=message):
            parse_methods(bad)


def test_published_figures_have_sources_and_known_datasets():
    datasets = {"voc21", "voc20", "context60", "context59", "coco_object", "coco_stuff", "cityscapes", "ade20k"}
    for figures in (method.published for method in METHODS.values()):
        for dataset, figure in figures.items():
            assert dataset in datasets and 0 < figure.miou < 100 and figure.source
