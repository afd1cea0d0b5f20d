"""One vocabulary resolution: the same rules from the Python API, the CLI, the demo and the eval."""

from __future__ import annotations

import warnings

import pytest

from itaclip.engine.errors import ItaclipError
from itaclip.engine.methods import get_preset
from itaclip.engine.vocabulary import (
    BUILTIN_LISTS,
    COCO_BACKGROUND,
    VOC_BACKGROUND,
    load_aux_texts,
    load_classes,
    resolve_vocabulary,
)

VOC_BG = tuple(VOC_BACKGROUND.split(", "))


def test_typed_classes_are_foreground_and_get_the_presets_background_set(tmp_path):
    vocab = resolve_vocabulary("person, dog, sofa", preset="voc21")
    assert vocab.names == ["background", "person", "dog", "sofa"]
    assert vocab.classes[0] == VOC_BG and vocab.aux_texts is None
    file = tmp_path / "mine.txt"
    file.write_text("person, man\ndog\n")
    vocab = resolve_vocabulary(file, preset="coco_object")
    assert vocab.classes == (tuple(COCO_BACKGROUND.split(", ")), ("person", "man"), ("dog",))
    assert resolve_vocabulary(["cat", "dog"], preset="voc21").names == ["background", "cat", "dog"]
    # presets without a background set add nothing
    assert resolve_vocabulary("cat, dog", preset="voc20").names == ["cat", "dog"]
    assert resolve_vocabulary("cat, dog").names == ["cat", "dog"]


@pytest.mark.parametrize("name", sorted(BUILTIN_LISTS))
def test_builtin_list_means_that_list_as_its_preset_uses_it(name):
    preset = BUILTIN_LISTS[name]  # ITACLIP's preset of that name, or another method's preset using the list
    plain = load_classes(name, has_background=preset.has_background)
    for under in (None, "default", "voc20", "coco_stuff"):
        vocab = resolve_vocabulary(name, preset=under)
        assert vocab.classes == plain.classes and vocab.has_background == preset.has_background
        assert vocab.aux_texts == (tuple(load_aux_texts(preset.aux_texts)) if preset.aux_texts else None)
        assert (vocab.names[0] == "background") == preset.has_background
    assert resolve_vocabulary(preset=preset) == resolve_vocabulary(name)  # no classes: the preset's own list
    if preset.classes == preset.name:
        assert preset is get_preset(name)


def test_background_words_replace_or_add_class_zero():
    replaced = resolve_vocabulary("voc21", background="sky, wall")
    assert replaced.classes[0] == ("sky", "wall") and replaced.num_classes == 21
    assert replaced.aux_texts == resolve_vocabulary("voc21").aux_texts  # still one per foreground class
    assert resolve_vocabulary(preset="voc21", background=["floor"]).classes[0] == ("floor",)
    typed = resolve_vocabulary("cat, dog", preset="voc21", background="floor")
    assert typed.classes == (("floor",), ("cat",), ("dog",))
    added = resolve_vocabulary("cat, dog", background="floor")
    assert added.names == ["background", "cat", "dog"]
    assert resolve_vocabulary("voc20", background="sky").num_classes == 21


def test_aux_texts_none_and_explicit(tmp_path):
    assert resolve_vocabulary("voc21", aux_texts="none").aux_texts is None
    texts = resolve_vocabulary("cat, dog", aux_texts=["a small pet", "a loyal pet"]).aux_texts
    assert texts == ("a small pet", "a loyal pet")
    with pytest.raises(ItaclipError, match="2 auxiliary texts for 3"):
        resolve_vocabulary("cat, dog, sky", aux_texts=["x", "y"])


@pytest.mark.parametrize("spec", ["cat", ["cat"], "sky"])
def test_fewer_than_two_classes_is_an_error(spec):
    with pytest.raises(ItaclipError, match="at least two classes"):
        resolve_vocabulary(spec)
    assert resolve_vocabulary(spec, preset="voc21").num_classes == 2  # with the background set: fine


@pytest.mark.parametrize("word, meant", [("coco-stuff", "coco_stuff"), ("voc_21", "voc21"), ("ade", "ade20k"),
                                         ("COCO_OBJECT", "coco_object"), ("city", "cityscapes"),
                                         ("Context-60", "context60")])
def test_a_word_close_to_a_list_name_is_an_error_naming_it(word, meant):
    for preset in (None, "voc21"):
        with pytest.raises(ItaclipError, match=f"did you mean.*'{meant}'"):
            resolve_vocabulary(word, preset=preset)


def test_ordinary_words_are_not_taken_for_list_names():
    for word in ("cat", "cocoa", "dog", "road", "vocal"):
        assert resolve_vocabulary(word, preset="voc21").names == ["background", word]


@pytest.mark.parametrize("spec, background", [("sky\ncat, dog", None), (["cat", "dog\r\nsky"], None),
                                              ("cat, dog", "wall\nfloor")])
def test_a_line_break_inside_a_name_is_an_error(spec, background):
    """An inline list typed over several lines used to reach the overlay's legend, which failed per
    image ("can't measure length of multiline text")."""
    with pytest.raises(ItaclipError, match=r"holds a line break: give one class per line in a class file"):
        resolve_vocabulary(spec, preset="voc21", background=background)


def test_an_inline_list_too_long_for_a_file_name_is_still_a_list():
    """Whether a spec is a file was asked of the file system, which refuses names over 255 bytes
    ("File name too long"), so a long inline list was an error."""
    long_name = " ".join(["a very long description of a class"] * 8)
    assert resolve_vocabulary(f"{long_name}, dog").names == [long_name, "dog"]
    assert resolve_vocabulary("cat, dog", aux_texts=[long_name, "a loyal pet"]).aux_texts[0] == long_name


def test_a_class_given_twice_is_warned_about():
    """Two classes with the same names (and auxiliary text) get the same features: the second is
    never chosen. The same word in the background set and a class (COCO-Object's "bed") is not."""
    with pytest.warns(UserWarning, match=r"class 3 \(cat\) repeats class 1: it can never be chosen"):
        resolve_vocabulary("cat, dog, cat", preset="voc21")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_vocabulary("coco_object", preset="coco_object")
        resolve_vocabulary("cat, cat", aux_texts=["a small pet", "a big wild cat"])


def test_first_class_as_background_on_request(tmp_path):
    file = tmp_path / "field_format.txt"
    file.write_text("sky, wall\ncat\ndog\n")
    vocab = resolve_vocabulary(file, preset="voc21", has_background=True)
    assert vocab.classes == (("sky", "wall"), ("cat",), ("dog",)) and vocab.has_background
    assert resolve_vocabulary(file, preset="voc21", has_background=False).names == ["sky", "cat", "dog"]


def test_segmenter_demo_and_eval_use_the_same_rules(tiny_ckpt):
    from itaclip import Segmenter
    from itaclip.datasets import DATASETS
    from itaclip.demo import DemoEngine
    from itaclip.evaluation.runner import dataset_vocabulary

    seg = Segmenter(tiny_ckpt, preset="voc21", device="cpu", pamr_steps=0, image_engineering=False, stride=112,
                    short_side=224, text_cache=False)
    expected = resolve_vocabulary("cat, dog", preset="voc21")
    assert seg.set_vocabulary("cat, dog") == expected
    assert seg.set_vocabulary("voc21") == resolve_vocabulary("voc21")
    with pytest.raises(ItaclipError, match="did you mean"):
        seg.set_vocabulary("coco-stuff")
    assert dataset_vocabulary(DATASETS["voc21"], background="floor") == resolve_vocabulary(
        preset="voc21", background="floor")
    engine = DemoEngine(segmenter=seg, preset="voc21")
    result = engine.segment(_write_image(), "cat, dog", preset="voc21")
    assert result.class_names == expected.names


def _write_image():
    import tempfile

    import numpy as np
    from PIL import Image

    path = tempfile.NamedTemporaryFile(suffix=".png", delete=False).name
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(path)
    return path
