"""Config validation, presets as data, vocabulary and auxiliary-text parsing."""

import pytest

from itaclip import ItaclipError, SegmenterConfig, build_config, get_preset, list_presets
from itaclip.engine.vocabulary import (
    COCO_BACKGROUND,
    VOC_BACKGROUND,
    Vocabulary,
    load_aux_texts,
    load_classes,
    parse_aux_lines,
)


def test_paper_presets_match_spec_table():
    # SPEC §5: short side, α, λ, logit scale, prob_thd, area_thd
    expected = {
        "voc21": (336, 0.05, 0.70, 60, 0.1, 0.1),
        "context60": (336, 0.15, 0.75, 55, 0.1, None),
        "coco_object": (336, 0.10, 0.75, 50, 0.1, None),
        "coco_stuff": (448, 0.20, 0.75, 40, 0.0, None),
        "cityscapes": (560, 0.05, 0.70, 40, 0.0, None),
    }
    for name, values in expected.items():
        cfg = build_config(name)
        assert (cfg.short_side, cfg.alpha, cfg.lam, cfg.logit_scale, cfg.prob_thd, cfg.area_thd) == values
        assert (cfg.crop, cfg.stride, cfg.pamr_steps, cfg.attention, cfg.remove_ffn) == (224, 28, 10, "q-q+k-k", True)
        assert cfg.intermediate_layers == (7, 8, 10)
    assert {"voc20", "context59", "ade20k"} <= set(list_presets())
    assert get_preset("voc21").has_background and not get_preset("coco_stuff").has_background


def test_explicit_options_override_preset():
    cfg = build_config("voc21", stride=56, alpha=0.3, area_thd=None)
    assert cfg.stride == 56 and cfg.alpha == 0.3 and cfg.area_thd == 0.1  # None means "not given"


@pytest.mark.parametrize("overrides, message", [
    (dict(stride=0), "stride"), (dict(stride=-3), "stride"), (dict(alpha=1.5), "alpha"),
    (dict(lam=-0.1), "lambda"), (dict(crop=-1), "crop"), (dict(attention="q-x"), "attention"),
    (dict(attention="q-q+q-q"), "attention"), (dict(views=("sepia",)), "view"), (dict(pamr_steps=-1), "PAMR"),
    (dict(prob_thd=2.0), "prob_thd"), (dict(area_thd=-1.0), "area_thd"), (dict(batch_size=0), "batch"),
    (dict(logit_scale=0), "logit"), (dict(intermediate_layers=(0,)), "1-indexed"),
    (dict(precision="fp8"), "precision"), (dict(short_side=0), "short side"),
])
def test_out_of_range_options_are_one_line_errors(overrides, message):
    with pytest.raises(ItaclipError, match=message) as info:
        build_config(None, **overrides)
    assert "\n" not in str(info.value)


def test_unknown_option_and_preset():
    with pytest.raises(ItaclipError, match="unknown option"):
        build_config(None, strid=3)
    with pytest.raises(ItaclipError, match="unknown preset"):
        build_config("voc99")


def test_attention_terms_parse():
    assert SegmenterConfig(attention="q-q + k-k + v-v").attention_terms == ("q-q", "k-k", "v-v")


def test_class_file_with_background_and_multiple_names(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("sky, wall\naeroplane\nperson, person in shirt, body\n\n")
    vocab = load_classes(path, has_background=True)
    assert vocab.classes == (("sky", "wall"), ("aeroplane",), ("person", "person in shirt", "body"))
    assert vocab.names == ["background", "aeroplane", "person"]
    assert vocab.queries == ["sky", "wall", "aeroplane", "person", "person in shirt", "body"]
    assert vocab.query_class == [0, 0, 1, 2, 2, 2]
    assert vocab.num_foreground == 2


def test_names_split_on_comma_space_like_the_authors(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a,b\nc, d\n")
    assert load_classes(path).classes == (("a,b",), ("c", "d"))


def test_inline_list_and_background_words():
    vocab = load_classes("cat, dog,sky").with_background("wall, floor")
    assert vocab.classes == (("wall", "floor"), ("cat",), ("dog",), ("sky",))
    assert vocab.has_background and vocab.names[0] == "background"


def test_builtin_class_files_have_the_authors_query_counts():
    counts = {"voc21": (21, 80), "context60": (60, 75), "coco_object": (81, 119), "coco_stuff": (171, 183),
              "cityscapes": (19, 26)}
    for name, (classes, queries) in counts.items():
        vocab = load_classes(name, has_background=get_preset(name).has_background)
        assert (vocab.num_classes, len(vocab.queries)) == (classes, queries), name
    assert ", ".join(load_classes("voc21", True).classes[0]) == VOC_BACKGROUND
    assert ", ".join(load_classes("coco_object", True).classes[0]) == COCO_BACKGROUND


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("cat,,dog", "empty name"), ("missing/file.txt", "does not exist"),
])
def test_malformed_class_lists(text, message):
    with pytest.raises(ItaclipError, match=message):
        load_classes(text)


def test_blank_line_inside_class_file_is_an_error(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("cat\n\ndog\n")
    with pytest.raises(ItaclipError, match="line 2 is empty"):
        load_classes(path)


def test_aux_texts_verbatim_after_first_marker(tmp_path):
    texts = parse_aux_lines(["cat >=a small animal.", "dog >=a >= b ", "x >=y\r"])
    assert texts == ["a small animal.", "a ", "y"]
    path = tmp_path / "aux.txt"
    path.write_text("cat >=a pet\n")
    assert load_aux_texts(path) == ["a pet"]
    with pytest.raises(ItaclipError, match="line 1 has no '>='"):
        parse_aux_lines(["no marker"])
    with pytest.raises(ItaclipError, match="does not exist"):
        load_aux_texts(tmp_path / "nope.txt")


def test_aux_text_count_must_match_foreground_classes():
    with pytest.raises(ItaclipError, match="2 auxiliary texts for 1 non-background"):
        Vocabulary((("sky",), ("cat",)), True, ("a", "b"))
