"""``itaclip eval`` with any weights form: the 'backbones' comparison and Table 10 with local
weights in several forms, and the paper's auxiliary texts in paper-table runs."""

from __future__ import annotations

import json

import pytest
import torch

from helpers.datasets import build_dataset
from helpers.eval_cli import FAST, results_of, run_eval
from helpers.weights import openai_to_transformers

#: 4 of the 80 prompt templates: the harness, not the text side, is under test here.
pytestmark = pytest.mark.usefixtures("cheap_text_features")


@pytest.fixture(scope="module")
def tiny_as_transformers(tiny_ckpt, tmp_path_factory):
    """The tiny test network saved as a transformers CLIPModel folder."""
    pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf") / "tiny-clip"
    openai_to_transformers(torch.load(tiny_ckpt, weights_only=True)).save_pretrained(folder)
    return folder


def test_backbones_comparison_with_every_local_form(tmp_path, tiny_ckpt, tiny_as_transformers, capsys):
    build_dataset("voc", tmp_path / "data", n=1)
    out = tmp_path / "out"
    copy = tmp_path / "renamed.pt"
    copy.write_bytes(tiny_ckpt.read_bytes())
    backbones = ["--backbone", f"ViT-L/14={tiny_as_transformers}",
                 "--backbone", f"ViT-B-16:laion2b_s34b_b88k={copy}",
                 "--backbone", f"ViT-B-16:dfn2b={tiny_as_transformers}",
                 "--backbone", f"ViT-B-16:metaclip_fullcc={tiny_ckpt}"]
    assert run_eval("--paper-table", "backbones", "--dataset", "voc21", "--data-root", tmp_path / "data",
                    "--weights", tiny_ckpt, "--out", out, "--limit", "1", *backbones, *FAST) == 0
    text = capsys.readouterr().out
    assert "Comparison 'backbones'" in text and "DFN-2B ViT-B/16" in text and "67.9" in text
    table = json.loads((out / "paper_table_backbones_voc21.json").read_text())
    assert [r["row"] for r in table["rows"]] == ["OpenAI ViT-B/16", "OpenAI ViT-L/14", "LAION-2B ViT-B/16",
                                                 "DFN-2B ViT-B/16", "MetaCLIP-2.5B ViT-B/16"]
    # One network in two forms (OpenAI file, transformers folder): one mIoU, two runs (the file and
    # its renamed copy are one identity).
    assert len({r["ours"] for r in table["rows"]}) == 1
    assert len(results_of(out, "voc21")) == 2
    assert "NOT the paper's" in table["auxiliary_texts"]  # the authors' texts cannot be had here


def test_paper_table_uses_the_authors_texts_and_says_so(mirror, tmp_path, tiny_ckpt, capsys):  # noqa: F811
    build_dataset("voc", tmp_path / "data", n=1)
    out = tmp_path / "out"
    backbones = ["--backbone", f"ViT-L/14={tiny_ckpt}", "--backbone", f"ViT-B/32={tiny_ckpt}"]
    assert run_eval("--paper-table", "10", "--data-root", tmp_path / "data", "--weights", tiny_ckpt,
                    "--out", out, *backbones, *FAST) == 0
    captured = capsys.readouterr()
    assert "auxiliary texts: the authors' LLaMA-3 texts voc21_definitions.txt" in captured.err
    assert "Auxiliary texts: the authors' LLaMA-3 texts" in captured.out
    (run,) = results_of(out, "voc21")
    texts = run["settings"]["vocabulary"]["aux_texts"]
    assert texts[0].startswith("LLaMA says 0") and len(texts) == 20
    assert mirror.requests == ["/mirror/voc21_definitions.txt"]
