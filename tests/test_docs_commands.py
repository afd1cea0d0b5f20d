"""The commands of README.md and docs/ as a user types them after the README's install: the
labelling walk-through run as written (on a tiny model), and every torchrun line in a form that
works without activating the environment."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from itaclip.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Engine flags that make a run take well under a second once the model is loaded.
FAST = ["--device", "cpu", "--short-side", "32", "--crop", "32", "--stride", "32", "--no-image-engineering",
        "--pamr-steps", "1"]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines left out."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.split("  #")[0].strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def section_block(path: Path, heading: str) -> str:
    text = path.read_text(encoding="utf-8")
    return code_blocks(text[text.index(heading):])[0]


def write_photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8))


def test_annotation_prelabel_commands_as_written(tmp_path, tiny_ckpt, monkeypatch, capsys):
    """docs/ANNOTATION.md, "Pre-label a folder": the first command, an image added, the second
    command (the new image gets every export and the run's files cover all three), the list form."""
    steps = commands(section_block(ROOT / "docs" / "ANNOTATION.md", "## Pre-label a folder"))
    assert [step.split()[0] for step in steps] == ["itaclip", "itaclip", "find", "itaclip"], steps
    monkeypatch.chdir(tmp_path)
    write_photo(tmp_path / "photos" / "a.jpg", 0)
    write_photo(tmp_path / "photos" / "sub" / "b.jpg", 1)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    extra = ["--weights", str(tiny_ckpt), *FAST]
    labels = tmp_path / "labels"

    def run(step: str) -> int:
        if step.startswith("itaclip "):
            return main(shlex.split(step)[1:] + extra)
        return subprocess.run(step, shell=True, cwd=tmp_path, timeout=60).returncode

    assert run(steps[0]) == 0
    write_photo(tmp_path / "photos" / "sub" / "new.jpg", 2)
    capsys.readouterr()
    assert run(steps[1]) == 0
    assert "1 done, 2 skipped, 0 failed" in capsys.readouterr().err
    for name in ("new.png", "new.coco.json", "new.labelstudio.json"):
        assert (labels / "sub" / name).is_file(), name
    coco = json.loads((labels / "coco.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == ["a.jpg", "sub/b.jpg", "sub/new.jpg"]
    tasks = json.loads((labels / "tasks.json").read_text())
    assert sorted(task["data"]["image"] for task in tasks) == [
        "/data/local-files/?d=photos/a.jpg", "/data/local-files/?d=photos/sub/b.jpg",
        "/data/local-files/?d=photos/sub/new.jpg"]
    assert (labels / "cvat" / "SegmentationClass" / "sub" / "new.png").is_file()
    assert run(steps[2]) == 0 and len((tmp_path / "all.txt").read_text().split()) == 3
    assert run(steps[3]) == 0
    assert "0 done, 3 skipped, 0 failed" in capsys.readouterr().err
    assert json.loads((labels / "coco.json").read_text()) == coco
    # The form the page used to show, without the output flags: refused, with the flags to give.
    (tmp_path / "new.txt").write_text("photos/sub/new.jpg\n")
    assert main(["segment", "--files-from", "new.txt", "--input-root", "photos", "--classes", "classes.txt",
                 "--out", "labels/", *extra]) == 2
    err = capsys.readouterr().err
    assert "other output options" in err and "--no-overlay --export coco,labelstudio,cvat" in err
    assert json.loads((labels / "itaclip-run.json").read_text())["outputs"]["exports"] == [
        "coco", "labelstudio", "cvat"]


def torchrun_commands(text: str) -> list[str]:
    """Every torchrun command that runs itaclip: in code blocks and in inline code."""
    found = [command for block in code_blocks(text) for command in commands(block) if "torchrun " in command]
    found += [" ".join(span.split()) for span in re.findall(r"`([^`\n]*(?:\n[^`\n]*)?)`", text)
              if "torchrun " in span]
    return [command for command in found if "itaclip" in command]


@pytest.mark.parametrize("doc", DOCS, ids=[path.name for path in DOCS])
def test_torchrun_lines_work_after_the_readme_install(doc):
    """`--no-python itaclip` needs the environment's bin/ on the PATH; `-m itaclip.cli` runs the
    package with torchrun's own Python. The README calls the environment's torchrun; the other
    pages say to activate the environment (or to write .venv/bin/torchrun)."""
    text = doc.read_text(encoding="utf-8")
    found = torchrun_commands(text)
    for command in found:
        assert "--no-python" not in command and "-m itaclip.cli " in command, (doc.name, command)
        if doc.name == "README.md":
            assert re.search(r"(^|\s)\.venv/bin/torchrun ", command), command
    if found and doc.name != "README.md":
        assert ". .venv/bin/activate" in text and ".venv/bin/torchrun" in text, doc.name


def test_eval_help_shows_a_torchrun_line_that_works():
    from itaclip.cli.eval import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    found = torchrun_commands("```\n" + parser.epilog + "\n```\n")
    assert found and all("-m itaclip.cli eval" in c and "--no-python" not in c for c in found), found


@pytest.mark.parametrize("doc", DOCS, ids=[path.name for path in DOCS])
def test_source_files_named_in_the_docs_exist(doc):
    """A module the docs point at (`itaclip/outputs/exports.py`) is where they say."""
    named = re.findall(r"`(?:src/)?(itaclip/[\w/]+\.py)`", doc.read_text(encoding="utf-8"))
    missing = [path for path in named if not (ROOT / "src" / path).is_file()]
    assert not missing, (doc.name, missing)


def test_demo_page_section_names_the_method_selector():
    text = (ROOT / "docs" / "DEMO.md").read_text(encoding="utf-8")
    page = text[text.index("## The page"):text.index("Behaviour worth knowing")]
    assert "**Method**" in page and all(name in page for name in ("clip", "maskclip", "sclip", "clearclip", "naclip"))


@pytest.mark.parametrize("doc", DOCS[1:], ids=[path.name for path in DOCS[1:]])
def test_pages_with_bare_commands_say_how_to_run_them(doc):
    """docs/ pages write `itaclip ...`: they say to activate the README's environment first (the
    README itself writes `.venv/bin/itaclip`)."""
    text = doc.read_text(encoding="utf-8")
    bare = [c for block in code_blocks(text) for c in commands(block)
            if re.match(r"(\w+=\S+ )*(itaclip|pip|python|torchrun) ", c)]
    if bare:
        assert ". .venv/bin/activate" in text, (doc.name, bare[:3])
