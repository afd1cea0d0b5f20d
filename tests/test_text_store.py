"""Per-text feature cache: a vocabulary encodes only texts never seen, in memory or on disk, and the
features equal a plain one-text-at-a-time encoding (tests/naive_reference.py) and a whole-vocabulary
encoding within float rounding."""

from __future__ import annotations

import pytest
import torch

import naive_reference as ref

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("single_thread")]

itaclip = pytest.importorskip("itaclip")
from itaclip.engine import predictor  # noqa: E402
from itaclip.engine.text import template_features  # noqa: E402

#: fp32 rounding of batched vs one-at-a-time encodings of unit-length features.
TEXT_ATOL = 2e-6

VOCAB = [("sky", "wall", "tree"), ("cat",), ("dog", "puppy"), ("car",)]
AUX = ["a small domesticated carnivorous mammal with soft fur.", "a domesticated mammal that barks.",
       "a road vehicle with four wheels"]


def _classes_arg(classes):
    return [", ".join(names) for names in classes]


@pytest.fixture
def encoded(monkeypatch):
    """Lists of texts passed to the text encoder, one list per call."""
    calls: list[list[str]] = []
    original = predictor.template_features

    def counting(model, tokenizer, names, **kwargs):
        calls.append(list(names))
        return original(model, tokenizer, names, **kwargs)

    monkeypatch.setattr(predictor, "template_features", counting)
    return calls


def _segmenter(ckpt, cache):
    return itaclip.Segmenter(weights=str(ckpt), device="cpu", text_cache=cache, alpha=0.0)


def test_one_new_class_encodes_only_its_texts_and_equals_the_references(tiny_ckpt, tiny_state, tmp_path,
                                                                        encoded):
    seg = _segmenter(tiny_ckpt, tmp_path)
    seg.set_vocabulary(_classes_arg(VOCAB), has_background=True)
    assert encoded == [["sky", "wall", "tree", "cat", "dog", "puppy", "car"]]  # one batch for all
    assert "7 encoded" in seg.text_source

    grown = VOCAB + [("bicycle", "bike")]
    seg.set_vocabulary(_classes_arg(grown), has_background=True)
    assert encoded[1:] == [["bicycle", "bike"]]
    assert seg.text_source.startswith("9 texts: 7 already in memory, 2 encoded")

    names = [name for cls in grown for name in cls]
    naive = torch.stack([ref.reference_prompt_feature(tiny_state, name) for name in names])
    torch.testing.assert_close(seg.text_features, naive, atol=TEXT_ATOL, rtol=0)
    whole = template_features(seg.model, seg._loaded.tokenizer, names)  # the whole vocabulary in one go
    torch.testing.assert_close(seg.text_features, whole, atol=TEXT_ATOL, rtol=0)

    seg.set_vocabulary(_classes_arg(grown), has_background=True)
    assert len(encoded) == 2 and seg.text_source == "9 texts already in memory"


def test_disk_cache_serves_every_text_and_a_corrupt_entry_costs_one_text(tiny_ckpt, tmp_path, encoded):
    first = _segmenter(tiny_ckpt, tmp_path)
    first.set_vocabulary(_classes_arg(VOCAB), has_background=True)
    entries = sorted((tmp_path / "texts").glob("??/*.pt"))
    assert len(entries) == 7 and all(p.parent.name == p.name[:2] for p in entries)

    second = _segmenter(tiny_ckpt, tmp_path)  # a new process would see the same
    second.set_vocabulary(_classes_arg(VOCAB), has_background=True)
    assert len(encoded) == 1
    assert second.text_source.startswith("7 texts: 7 from the disk cache")
    assert torch.equal(second.text_features, first.text_features)

    entries[0].write_bytes(entries[0].read_bytes()[:-3])
    third = _segmenter(tiny_ckpt, tmp_path)
    with pytest.warns(UserWarning, match="corrupt"):
        third.set_vocabulary(_classes_arg(VOCAB), has_background=True)
    assert len(encoded) == 2 and len(encoded[1]) == 1
    assert "6 from the disk cache, 1 encoded" in third.text_source
    torch.testing.assert_close(third.text_features, first.text_features, atol=TEXT_ATOL, rtol=0)


def test_other_templates_or_weights_never_share_entries(tiny_ckpt, two_head_ckpt, tmp_path, encoded):
    _segmenter(tiny_ckpt, tmp_path).set_vocabulary("cat, dog")
    _segmenter(two_head_ckpt, tmp_path).set_vocabulary("cat, dog")
    assert encoded == [["cat", "dog"], ["cat", "dog"]]
    assert len(list((tmp_path / "texts").glob("??/*.pt"))) == 4


def test_aux_texts_and_names_share_one_batch_and_match_the_reference(tiny_ckpt, tiny_state, tmp_path, encoded):
    seg = itaclip.Segmenter(weights=str(tiny_ckpt), device="cpu", text_cache=tmp_path, alpha=0.3)
    seg.set_vocabulary(_classes_arg(VOCAB), has_background=True, aux_texts=AUX)
    assert len(encoded) == 1 and encoded[0][-3:] == AUX
    naive, _ = ref.reference_text_features(tiny_state, VOCAB, True, AUX, alpha=0.3)
    torch.testing.assert_close(seg.text_features, naive, atol=TEXT_ATOL, rtol=0)


def test_disk_cache_off_writes_nothing(tiny_ckpt, tmp_path, monkeypatch, encoded):
    monkeypatch.setenv("ITACLIP_CACHE", str(tmp_path / "env"))
    seg = _segmenter(tiny_ckpt, False)
    seg.set_vocabulary("cat, dog")
    assert seg.text_source == "2 texts: 2 encoded (disk cache off)"
    assert not (tmp_path / "env").exists()
