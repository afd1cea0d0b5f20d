"""Labelling at scale: ``itaclip segment`` split between torchrun processes (file for file the same
as one process), file lists and the mirrored output tree, ``--no-overlay``, compact probabilities,
palette label PNGs, and the run-level exports read back by each tool's own reader."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import itaclip
from helpers.tool_envs import tool_venv
from itaclip.cli import main
from itaclip.engine.predictor import SegmentationResult
from itaclip.outputs.dataset import DatasetItem, write_dataset_exports
from itaclip.outputs.visualize import palette
from itaclip.outputs.writer import OutputOptions, probability_arrays, write_outputs

FAST = ["--short-side", "224", "--stride", "112", "--pamr-steps", "1", "--device", "cpu"]


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tree(tmp_path_factory, smooth_image, random_image, blocks_image) -> Path:
    """Three images in two sub-folders, two of them named alike (``a/x.png``, ``b/x.jpg``)."""
    root = tmp_path_factory.mktemp("tree")
    (root / "a").mkdir()
    (root / "b").mkdir()
    cv2.imwrite(str(root / "a" / "x.png"), smooth_image[:, :, ::-1])
    cv2.imwrite(str(root / "b" / "x.jpg"), random_image[:, :, ::-1])
    cv2.imwrite(str(root / "b" / "y.png"), blocks_image[:, :, ::-1])
    return root


# ------------------------------------------------------------------------------------ torchrun


@pytest.mark.timeout(600)  # heavier than the suite's default
def test_two_torchrun_processes_equal_one_process_file_for_file(tmp_path, tree, tiny_ckpt):
    """Both runs as subprocesses with one thread each; every output file, the manifest and the
    dataset-level exports are byte-identical, each image is done once, and a resumed 2-process run
    does only what is missing."""
    common = ["--classes", "cat, dog, grass", "--weights", tiny_ckpt, *FAST, "--save-probs",
              "--export", "coco,labelstudio,cvat,masks", "--image-url-prefix", "/data/local-files/?d=photos/"]
    source = str(Path(itaclip.__file__).resolve().parents[1])  # this checkout's package, installed or not
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    module = ["-m", "itaclip.cli", "segment", *map(str, common)]

    one = subprocess.run([sys.executable, *module, str(tree), "--recursive", "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]

    def torchrun(out: Path, *inputs: str, stdin: str = "") -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               *module, *inputs, "--out", str(out)], env=env, input=stdin, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    two = torchrun(tmp_path / "two", str(tree), "--recursive")
    expected = files_of(tmp_path / "one")
    assert "a/x.png" in expected and "b/x.png" in expected and "coco.json" in expected
    assert files_of(tmp_path / "two") == expected
    # 3 images: rank 0 did 2, rank 1 did 1, and one summary for both.
    assert "[rank 0/2]: images 2/2" in two.stderr and "[rank 1/2]: images 1/1" in two.stderr
    summaries = [line for line in two.stderr.splitlines() if " done, " in line]
    assert len(summaries) == 1 and "3 done, 0 skipped, 0 failed" in summaries[0] and "2 processes" in summaries[0]

    # Resume an interrupted image, the same images listed on standard input (which only rank 0 reads).
    (tmp_path / "two" / "b" / "y.png").unlink()
    listing = "".join(f"{tree / rel}\n" for rel in ("a/x.png", "b/x.jpg", "b/y.png"))
    again = torchrun(tmp_path / "two", "--files-from", "-", "--input-root", str(tree), stdin=listing)
    assert "1 done, 2 skipped, 0 failed" in again.stderr
    assert files_of(tmp_path / "two") == expected


# ------------------------------------------------------------------------------- inputs, outputs


def test_files_from_list_and_stdin_mirror_the_input_tree(tmp_path, tree, tiny_ckpt, monkeypatch, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text("a/x.png\n\nb/x.jpg\n")  # relative to the current folder
    monkeypatch.chdir(tree)
    out = tmp_path / "out"
    base = ["--classes", "cat, dog", "--weights", tiny_ckpt, *FAST]
    assert run_cli("segment", "--files-from", listing, "--out", out, "--no-overlay", *base) == 0
    assert sorted(files_of(out)) == ["a/x.png", "b/x.png", "itaclip-run.json"]  # no collision, no overlays

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{tree / 'b' / 'y.png'}\n"))
    assert run_cli("segment", "--files-from", "-", "--input-root", tree, "--out", out, "--no-overlay", *base) == 0
    assert (out / "b" / "y.png").exists() and not (out / "y.png").exists()

    assert run_cli("segment", "--out", out, *base) == 2
    assert "no images given" in capsys.readouterr().err
    assert run_cli("segment", "--files-from", tmp_path / "absent.txt", "--out", out, *base) == 2
    assert "cannot read the file list" in capsys.readouterr().err


def test_single_folder_keeps_its_layout_and_outside_root_is_an_error(tmp_path, tree, tiny_ckpt, capsys):
    out = tmp_path / "out"
    base = ["--classes", "cat, dog", "--weights", tiny_ckpt, *FAST, "--no-overlay"]
    assert run_cli("segment", tree / "b", "--out", out, *base) == 0
    assert sorted(files_of(out)) == ["itaclip-run.json", "x.png", "y.png"]
    capsys.readouterr()
    # nothing usable: exit 2; one image outside the root beside a good one: that one fails (exit 1)
    assert run_cli("segment", tree / "a" / "x.png", "--input-root", tree / "b", "--out", tmp_path / "o2", *base) == 2
    assert "not under the input root" in capsys.readouterr().err and not (tmp_path / "o2").exists()
    assert run_cli("segment", tree / "a" / "x.png", tree / "b" / "y.png", "--input-root", tree / "b",
                   "--out", tmp_path / "o3", *base) == 1
    err = capsys.readouterr().err
    assert "not under the input root" in err and "1 done, 0 skipped, 1 failed" in err


def _result(labels: np.ndarray, num_classes: int, seed: int = 0) -> SegmentationResult:
    probs = np.random.default_rng(seed).random((num_classes, *labels.shape)).astype(np.float32)
    probs /= probs.sum(0, keepdims=True)
    return SegmentationResult(labels=labels, probs=probs, class_names=[f"class {c}" for c in range(num_classes)])


def test_probability_formats_against_plain_numpy(tmp_path):
    labels = np.random.default_rng(1).integers(0, 5, size=(7, 9)).astype(np.uint8)
    result = _result(labels, 5)
    result.probs[:, 0, 0] = 0.2  # a five-way tie: the lower class index comes first, as argmax
    image = np.zeros((7, 9, 3), np.uint8)
    for fmt in ("float32", "float16", "topk:3", "topk:9"):
        write_outputs(tmp_path, fmt.replace(":", "_"), image, result, OutputOptions(save_probs=True, probs_format=fmt))
    full = np.load(tmp_path / "float32.npz")
    assert full["probs"].dtype == np.float32 and np.array_equal(full["probs"], result.probs)
    half = np.load(tmp_path / "float16.npz")
    assert half["probs"].dtype == np.float16 and np.array_equal(half["probs"], result.probs.astype(np.float16))
    top = np.load(tmp_path / "topk_3.npz")
    assert sorted(top.files) == ["class_names", "topk_indices", "topk_probs"]
    assert top["topk_indices"].shape == (3, 7, 9) and top["topk_indices"].dtype == np.uint8
    for y in range(7):
        for x in range(9):
            ranked = sorted(range(5), key=lambda c: (-result.probs[c, y, x], c))[:3]
            assert top["topk_indices"][:, y, x].tolist() == ranked
            assert top["topk_probs"][:, y, x].tolist() == [float(np.float16(result.probs[c, y, x])) for c in ranked]
    assert top["topk_indices"][:, 0, 0].tolist() == [0, 1, 2]
    assert np.load(tmp_path / "topk_9.npz")["topk_indices"].shape == (5, 7, 9)  # K above C keeps all C
    many = probability_arrays(np.zeros((300, 2, 2), np.float32), "topk:2")
    assert many["topk_indices"].dtype == np.uint16


def test_probs_format_flag_and_its_errors(tmp_path, tree, tiny_ckpt, capsys):
    out = tmp_path / "out"
    base = [tree / "a", "--classes", "cat, dog, grass", "--weights", tiny_ckpt, *FAST, "--out", out]
    assert run_cli("segment", *base, "--probs-format", "topk:2") == 0  # implies --save-probs
    data = np.load(out / "x.npz")
    assert data["topk_indices"].shape[0] == 2 and data["topk_probs"].dtype == np.float16
    capsys.readouterr()
    assert run_cli("segment", *base, "--probs-format", "bf8") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "topk:K" in err[0]
    assert run_cli("segment", *base, "--probs-format", "float16") == 2  # the folder's npz hold top-k
    assert "probs_format" in capsys.readouterr().err


def test_label_pngs_are_palette_pngs_with_unchanged_values(tmp_path):
    labels = np.arange(24, dtype=np.uint8).reshape(4, 6) % 21
    write_outputs(tmp_path, "voc", np.zeros((4, 6, 3), np.uint8), _result(labels, 21), OutputOptions(overlay=False))
    with Image.open(tmp_path / "voc.png") as png:
        assert png.mode == "P"
        assert np.array_equal(np.asarray(png), labels)
        colours = np.array(png.getpalette()[:768], dtype=np.uint8).reshape(256, 3)
    assert np.array_equal(colours, palette(256)) and colours[15].tolist() == [192, 128, 128]  # VOC "person"
    wide = (np.arange(24, dtype=np.uint16).reshape(4, 6) * 13) % 300
    write_outputs(tmp_path, "wide", np.zeros((4, 6, 3), np.uint8), _result(wide, 300), OutputOptions(overlay=False))
    back = cv2.imread(str(tmp_path / "wide.png"), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, wide)  # 16-bit greyscale above 256 classes


# ---------------------------------------------------------------------------- dataset-level files


@pytest.fixture
def exported(tmp_path):
    """Per-image files of three label maps in two folders, as a run writes them, and the run's files."""
    rng = np.random.default_rng(3)
    names = ["background", "traffic light", "dog", "sky"]
    rels = ["a/x.jpg", "b/x.png", "b/deep/z w.jpg"]
    maps, items = {}, []
    options = OutputOptions(overlay=False, exports=("coco", "labelstudio", "cvat"))
    for image_id, rel in enumerate(rels, 1):
        labels = rng.integers(0, len(names), size=(11 + image_id, 13)).astype(np.uint8)
        labels[:4] = 1
        out_dir, stem = tmp_path / Path(rel).parent, Path(rel).stem
        result = SegmentationResult(labels=labels, probs=_result(labels, 4).probs, class_names=names)
        write_outputs(out_dir, stem, np.zeros((*labels.shape, 3), np.uint8), result, options, image_file=rel)
        maps[rel] = labels
        items.append(DatasetItem(image_id * 10, rel, out_dir, stem))
    written = write_dataset_exports(tmp_path, items, names, options.exports, "/data/local-files/?d=photos/")
    return tmp_path, names, maps, written


def test_coco_file_of_the_run_reads_back_with_pycocotools(exported):
    from pycocotools.coco import COCO

    folder, names, maps, written = exported
    assert written["coco"] == folder / "coco.json"
    coco = COCO(str(folder / "coco.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == names
    images = coco.loadImgs(coco.getImgIds())
    assert sorted((i["id"], i["file_name"]) for i in images) \
        == [(10, "a/x.jpg"), (20, "b/x.png"), (30, "b/deep/z w.jpg")]
    ids = [a["id"] for a in coco.dataset["annotations"]]
    assert sorted(ids) == list(range(1, len(ids) + 1))  # unique over the run
    for image in images:
        labels = np.full((image["height"], image["width"]), -1)
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            labels[coco.annToMask(annotation) == 1] = annotation["category_id"] - 1
        assert np.array_equal(labels, maps[image["file_name"]])


def test_labelstudio_tasks_and_config_read_back(exported):
    """tasks.json and its config as Label Studio reads them (tests/test_label_studio_real.py imports
    such a config and such masks into a real Label Studio)."""
    from xml.etree import ElementTree

    from helpers.exports import decode_labelstudio_rle

    folder, names, maps, _ = exported
    config = ElementTree.fromstring((folder / "labelstudio_config.xml").read_text())
    (image,) = config.iter("Image")
    (brush,) = config.iter("BrushLabels")
    assert image.attrib["name"] == brush.attrib["toName"] == "image" and image.attrib["value"] == "$image"
    assert brush.attrib["name"] == "tag" and [label.attrib["value"] for label in brush.iter("Label")] == names
    tasks = json.loads((folder / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [
        "/data/local-files/?d=photos/a/x.jpg", "/data/local-files/?d=photos/b/x.png",
        "/data/local-files/?d=photos/b/deep/z%20w.jpg"]
    for task, (rel, labels) in zip(tasks, maps.items()):
        results = task["predictions"][0]["result"]
        assert [r["value"]["brushlabels"] for r in results] == [[names[c]] for c in np.unique(labels)]
        for result in results:
            assert (result["original_height"], result["original_width"]) == labels.shape
            layer = decode_labelstudio_rle(result["value"]["rle"]).reshape(*labels.shape, 4)[:, :, 3]
            c = names.index(result["value"]["brushlabels"][0])
            assert np.array_equal(layer > 0, labels == c), rel


def test_cvat_segmentation_mask_layout_reads_back(exported):
    """CVAT's "Segmentation mask 1.1" as its documentation gives it (datumaro, CVAT's reader, would
    replace this environment's OpenCV, so the layout is read here by the documented rules)."""
    folder, names, maps, _ = exported
    cvat = folder / "cvat"
    lines = [line for line in (cvat / "labelmap.txt").read_text().splitlines() if not line.startswith("#")]
    colours = {}
    for line in lines:
        name, colour, parts, actions = line.split(":")
        assert parts == actions == ""
        colours[tuple(int(v) for v in colour.split(","))] = names.index(name)
    assert [line.split(":")[0] for line in lines] == names and len(colours) == len(names)
    ids = (cvat / "ImageSets" / "Segmentation" / "default.txt").read_text().splitlines()
    assert ids == ["a/x", "b/x", "b/deep/z w"]
    for item, labels in zip(ids, maps.values()):
        with Image.open(cvat / "SegmentationClass" / f"{item}.png") as mask:
            rgb = np.asarray(mask.convert("RGB"))  # colours, as CVAT reads a mask
        decoded = np.vectorize(lambda r, g, b: colours[(r, g, b)])(rgb[..., 0], rgb[..., 1], rgb[..., 2])
        assert np.array_equal(decoded, labels)


#: Run in datumaro's environment: the labels and every item's decoded label map (-1 = no mask).
READ_WITH_DATUMARO = """
import json, sys
import numpy as np
from datumaro.components.annotation import AnnotationType
from datumaro.components.dataset import Dataset

dataset = Dataset.import_from(sys.argv[1], "voc_segmentation")
items = {}
for item in dataset:
    decoded = None
    for annotation in item.annotations:
        if annotation.type == AnnotationType.mask:
            mask = annotation.image.astype(bool)
            decoded = np.full(mask.shape, -1) if decoded is None else decoded
            decoded[mask] = annotation.label
    items[item.id] = decoded.tolist()
json.dump({"labels": [label.name for label in dataset.categories()[AnnotationType.label]], "items": items},
          sys.stdout)
"""


def test_cvat_layout_reads_back_with_datumaro(exported):
    """CVAT imports "Segmentation mask 1.1" with datumaro's voc_segmentation reader, run here in its
    own environment (``tests/datumaro_env.sh``: datumaro brings its own OpenCV build)."""
    venv = tool_venv("ITACLIP_DATUMARO_VENV", "datumaro-1.13.12", "datumaro_env.sh", 1)
    folder, names, maps, _ = exported
    run = subprocess.run([str(venv / "bin" / "python"), "-c", READ_WITH_DATUMARO, str(folder / "cvat")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    read = json.loads(run.stdout)
    assert read["labels"] == names
    assert sorted(read["items"]) == ["a/x", "b/deep/z w", "b/x"]
    for item_id, decoded in read["items"].items():
        expected = maps[next(rel for rel in maps if rel.rsplit(".", 1)[0] == item_id)]
        assert np.array_equal(np.array(decoded), expected), item_id


def test_cvat_export_refuses_what_it_cannot_hold(tmp_path, tree, tiny_ckpt, capsys):
    assert run_cli("segment", tree / "a", "--classes", "cat, dog: small", "--export", "cvat", "--out", tmp_path,
                   "--weights", tiny_ckpt, *FAST) == 2
    assert "labelmap.txt" in capsys.readouterr().err


def test_dataset_files_cover_resumed_runs(tmp_path, tree, tiny_ckpt, capsys):
    """The run-level files are rebuilt from every image's files, including those of an earlier run."""
    out = tmp_path / "out"
    base = ["--classes", "cat, dog", "--weights", tiny_ckpt, *FAST, "--no-overlay", "--export", "coco", "--out", out]
    assert run_cli("segment", tree, "--recursive", *base) == 0
    first = json.loads((out / "coco.json").read_text())
    (out / "b" / "y.png").unlink()
    capsys.readouterr()
    assert run_cli("segment", tree, "--recursive", *base) == 0
    assert "1 done, 2 skipped" in capsys.readouterr().err
    assert json.loads((out / "coco.json").read_text()) == first
    assert [i["file_name"] for i in first["images"]] == ["a/x.png", "b/x.jpg", "b/y.png"]


# ---------------------------------------------------------------------------------------- CVAT


def test_cvat_auto_annotation_function_gives_the_label_map(tiny_ckpt, smooth_image):
    cvataa = pytest.importorskip("cvat_sdk.auto_annotation")
    from cvat_sdk.masks import decode_mask

    from itaclip import Segmenter
    from itaclip.engine.vocabulary import resolve_vocabulary
    from itaclip.integrations import cvat

    options = dict(weights=str(tiny_ckpt), device="cpu", short_side=224, stride=112, pamr_steps=1)
    function = cvat.create(classes="cat, dog, grass", background="sky", **options)
    spec = function.spec
    assert isinstance(spec, cvataa.DetectionFunctionSpec)
    assert [(label.name, label.id, label.type) for label in spec.labels] == [
        ("cat", 1, "mask"), ("dog", 2, "mask"), ("grass", 3, "mask")]  # the background set is not a label

    class Context(cvataa.DetectionFunctionContext):
        frame_name = "smooth.png"
        conf_threshold = None
        conv_mask_to_poly = False

    height, width = smooth_image.shape[:2]
    shapes = function.detect(Context(), Image.fromarray(smooth_image))
    expected = Segmenter(str(tiny_ckpt), preset="default", **{k: v for k, v in options.items() if k != "weights"})
    expected.set_vocabulary(resolve_vocabulary("cat, dog, grass", preset="default", background="sky"))
    labels = expected.segment(smooth_image).labels
    rebuilt = np.zeros_like(labels)
    for shape in shapes:
        assert shape.type.value == "mask" and shape.frame == 0 and shape.label_id in (1, 2, 3)
        rebuilt[decode_mask(shape.points, image_width=width, image_height=height)] = shape.label_id
    assert np.array_equal(rebuilt, labels)
    assert sorted(s.label_id for s in shapes) == sorted(c for c in np.unique(labels).tolist() if c)

    class Polygons(Context):
        conv_mask_to_poly = True

    polygons = function.detect(Polygons(), Image.fromarray(smooth_image))
    assert polygons and all(p.type.value == "polygon" and len(p.points) >= 6 for p in polygons)

    class Strict(Context):
        conf_threshold = 1.0

    assert function.detect(Strict(), Image.fromarray(smooth_image)) == []
