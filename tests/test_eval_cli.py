"""``itaclip eval`` end to end with a tiny random CLIP: every dataset layout, resume, settings
hashing, bad input, paper tables, and 1-process vs 2-process (torchrun, gloo) bit-for-bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.datasets import LABELME_VOC, build_dataset, build_for, expected_labels, write_label
from helpers.eval_cli import FAST, confusion_of, only_result, results_of, run_eval
from itaclip.datasets import DATASETS, load_dataset

#: 4 of the 80 prompt templates: the harness, not the text side, is under test here.
pytestmark = pytest.mark.usefixtures("cheap_text_features")

# ------------------------------------------------------------------------------ every dataset


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_end_to_end_every_dataset(dataset, tmp_path, tiny_ckpt, capsys):
    root, stored = build_for(dataset, tmp_path / "data", n=2)
    out = tmp_path / "out"
    assert (
        run_eval(
            "--dataset",
            dataset,
            "--data-root",
            tmp_path / "data",
            "--weights",
            tiny_ckpt,
            "--out",
            out,
            *FAST,
        )
        == 0
    )
    result = only_result(out, dataset)
    n = DATASETS[dataset].num_classes
    assert result["complete"] is True and result["status"] == "complete"
    assert result["images_evaluated"] == 2 and result["images_skipped"] == 0 and result["images_pending"] == 0
    assert len(result["per_class"]) == n
    assert 0.0 <= result["mIoU"] <= 100.0
    # Ground-truth side of the confusion matrix, checked against the stored label maps directly.
    cm = confusion_of(result)
    assert cm.shape == (n, n) and cm.dtype == np.int64
    gt = np.concatenate([expected_labels(dataset, labels).ravel() for labels in stored.values()])
    np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(gt[gt != 255], minlength=n))
    assert [row["gt_pixels"] for row in result["per_class"]] == cm.sum(axis=1).tolist()
    md = (Path(result["run_dir"]) / "results.md").read_text()
    assert "| class | IoU | Acc |" in md and "PARTIAL" not in md
    assert f"{dataset}: mIoU" in capsys.readouterr().out


@pytest.mark.skipif(not LABELME_VOC.is_dir(), reason="tests/data/voc not present")
def test_labelme_voc_end_to_end(tmp_path, tiny_ckpt):
    out = tmp_path / "out"
    assert (
        run_eval(
            "--dataset", "voc21", "--data-root", LABELME_VOC, "--weights", tiny_ckpt, "--out", out, *FAST
        )
        == 0
    )
    result = only_result(out, "voc21")
    assert result["complete"] and result["images_evaluated"] == 3
    ds = load_dataset("voc21", LABELME_VOC)
    gt = np.concatenate([ds.load_label(s).ravel() for s in ds.samples])
    np.testing.assert_array_equal(confusion_of(result).sum(axis=1), np.bincount(gt[gt != 255], minlength=21))


def test_progress_lines_show_the_running_miou_of_the_images_done(tmp_path, tiny_ckpt, capsys, monkeypatch):
    """Each progress line (one per image here: interval 0) carries the mIoU of the images done so
    far, including the image it counts; the last line is not written twice."""
    import itaclip.progress
    from itaclip.evaluation.loop import load_sample_result, sample_filename
    from itaclip.evaluation.metrics import mean_iou

    plain = itaclip.progress.LineProgress.__init__

    def every_update(self, *args, **kwargs):
        plain(self, *args, **kwargs)
        self.interval = 0.0

    monkeypatch.setattr(itaclip.progress.LineProgress, "__init__", every_update)
    build_dataset("voc", tmp_path / "data", n=3)
    args = [a for a in FAST if a != "--no-progress"]
    assert run_eval("--dataset", "voc21", "--data-root", tmp_path / "data", "--weights", tiny_ckpt,
                    "--out", tmp_path / "out", *args) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("itaclip eval: voc21 ")]
    assert [line.split()[3] for line in lines] == ["1/3", "2/3", "3/3"], lines
    result = only_result(tmp_path / "out", "voc21")
    dataset = load_dataset("voc21", tmp_path / "data")
    running = np.zeros((21, 21), np.int64)
    for line, sample in zip(lines, dataset.samples):
        path = Path(result["run_dir"]) / "samples" / sample_filename(sample.key)
        running += load_sample_result(path, sample.key, 21)
        assert line.endswith(f"mIoU {100 * mean_iou(running):.2f}"), (line, sample.key)
    assert lines[-1].endswith(f"mIoU {result['mIoU']:.2f}")


# ------------------------------------------------------------------------------ resume


def test_resume_after_interruption(tmp_path, tiny_ckpt, monkeypatch, capsys):
    build_dataset("voc", tmp_path / "data", n=4)
    out = tmp_path / "out"
    common = ["--dataset", "voc21", "--data-root", tmp_path / "data", "--weights", tiny_ckpt, *FAST]

    from itaclip.engine.predictor import Segmenter

    original = Segmenter.segment
    calls = {"n": 0}

    def interrupting(self, image, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, image, *a, **k)

    monkeypatch.setattr(Segmenter, "segment", interrupting)
    assert run_eval(*common, "--out", out) == 130
    partial = only_result(out, "voc21")
    assert partial["complete"] is False and partial["status"] == "partial"
    assert partial["images_evaluated"] == 2 and partial["images_pending"] == 2
    assert "interrupted" in partial["note"]
    assert "PARTIAL" in (Path(partial["run_dir"]) / "results.md").read_text()
    assert len(list(Path(partial["run_dir"]).glob("samples/*.npz"))) == 2

    def counting(self, image, *a, **k):
        calls["n"] += 1
        return original(self, image, *a, **k)

    monkeypatch.setattr(Segmenter, "segment", counting)
    calls["n"] = 0
    capsys.readouterr()
    assert run_eval(*common, "--out", out) == 0
    assert calls["n"] == 2  # only the two missing images
    assert "resuming" in capsys.readouterr().err
    resumed = only_result(out, "voc21")
    assert resumed["complete"] is True and resumed["run_dir"] == partial["run_dir"]

    # Identical to an uninterrupted run.
    fresh_out = tmp_path / "fresh"
    assert run_eval(*common, "--out", fresh_out) == 0
    fresh = only_result(fresh_out, "voc21")
    np.testing.assert_array_equal(confusion_of(resumed), confusion_of(fresh))
    assert resumed["mIoU"] == fresh["mIoU"]

    # A damaged per-image file is recomputed, not trusted.
    sample = sorted(Path(resumed["run_dir"]).glob("samples/*.npz"))[0]
    sample.write_bytes(b"garbage")
    calls["n"] = 0
    assert run_eval(*common, "--out", out) == 0
    assert calls["n"] == 1
    np.testing.assert_array_equal(confusion_of(only_result(out, "voc21")), confusion_of(fresh))

    # --restart recomputes everything.
    calls["n"] = 0
    assert run_eval(*common, "--out", out, "--restart") == 0
    assert calls["n"] == 4


def test_altered_counts_are_detected_and_recomputed(tmp_path, tiny_ckpt, monkeypatch, capsys):
    """A per-image result that is still a valid npz but whose counts were changed after it was
    written is not trusted: its digest no longer matches, so the image is computed again."""
    build_dataset("voc", tmp_path / "data", n=2)
    out = tmp_path / "out"
    common = ["--dataset", "voc21", "--data-root", tmp_path / "data", "--weights", tiny_ckpt, "--out", out, *FAST]
    assert run_eval(*common) == 0
    first = only_result(out, "voc21")
    sample = sorted(Path(first["run_dir"]).glob("samples/*.npz"))[0]
    with np.load(sample) as data:
        fields = {name: data[name] for name in data.files}
    fields["counts"] = fields["counts"] * 2  # e.g. someone "improving" a result
    np.savez_compressed(sample, **fields)

    from itaclip.engine.predictor import Segmenter

    original, calls = Segmenter.segment, []

    def counting(self, image, *a, **k):
        calls.append(image)
        return original(self, image, *a, **k)

    monkeypatch.setattr(Segmenter, "segment", counting)
    capsys.readouterr()
    assert run_eval(*[a for a in common if a != "--no-progress"]) == 0
    assert len(calls) == 1  # only the altered image
    # Progress also reaches a log (stderr is not a terminal here): a plain line, resumed image included.
    assert "itaclip eval: voc21 2/2 (100%)" in capsys.readouterr().err
    again = only_result(out, "voc21")
    np.testing.assert_array_equal(confusion_of(again), confusion_of(first))
    assert again["mIoU"] == first["mIoU"]
    with np.load(sample) as data:  # rewritten with the true counts
        np.testing.assert_array_equal(data["counts"], fields["counts"] // 2)


@pytest.mark.parametrize("module, error", [
    ("loop", OSError(28, "No space left on device")),  # a per-image result
    ("report", PermissionError(13, "Permission denied")),  # results.json
])
def test_failed_write_is_one_line(tmp_path, tiny_ckpt, monkeypatch, capsys, module, error):
    import importlib

    build_dataset("voc", tmp_path / "data", n=1)

    def failing(path, data, **kwargs):
        raise error

    monkeypatch.setattr(importlib.import_module(f"itaclip.evaluation.{module}"), "atomic_write_bytes", failing)
    out = tmp_path / "out"
    assert run_eval("--dataset", "voc21", "--data-root", tmp_path / "data", "--weights", tiny_ckpt, "--out", out,
                    *FAST) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("itaclip eval: error: cannot write ") and str(out) in line
    assert error.strerror in line
    assert ("free some space" if error.errno == 28 else "choose a folder you can write to") in line


def test_ranks_must_agree_on_run_settings(tmp_path, tiny_ckpt, monkeypatch):
    """Every torchrun rank writes into one run directory, so all must compute the same settings:
    a rank with another CPU thread count (which changes fp32 results) stops the run on every rank."""
    from itaclip.engine.errors import ItaclipError
    from itaclip.evaluation import distributed
    from itaclip.evaluation.runner import EvalRequest, run_evaluation

    def gather_with_other_threads(settings, info):
        return [settings, {**settings, "cpu_threads": settings["cpu_threads"] + 1}]

    monkeypatch.setattr(distributed, "all_gather_objects", gather_with_other_threads)
    build_dataset("voc", tmp_path / "data", n=1)
    request = EvalRequest(
        load_dataset("voc21", tmp_path / "data"), str(tiny_ckpt), tmp_path / "out", device="cpu",
        overrides={"short_side": 224, "stride": 112, "pamr_steps": 1}, progress=False,
        info=distributed.DistInfo(rank=0, world_size=2),
    )
    disagree = r"disagree on cpu_threads \(rank 0: (\d+), rank 1: (\d+)\).*OMP_NUM_THREADS"
    with pytest.raises(ItaclipError, match=disagree):
        run_evaluation(request)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_limit_is_partial_and_settings_are_keyed(tmp_path, tiny_ckpt):
    build_dataset("voc", tmp_path / "data", n=2)
    out = tmp_path / "out"
    common = ["--dataset", "voc21", "--data-root", tmp_path / "data", "--weights", tiny_ckpt, "--out", out]
    assert run_eval(*common, *FAST, "--limit", "1") == 0
    limited = only_result(out, "voc21")
    assert (
        limited["complete"] is False and limited["images_evaluated"] == 1 and "--limit 1" in limited["note"]
    )
    assert run_eval(*common, *FAST) == 0  # same settings: continues the limited run
    full = only_result(out, "voc21")
    assert full["complete"] and full["run_dir"] == limited["run_dir"]
    # Execution-only knobs share the run; anything that changes predictions gets its own.
    assert run_eval(*common, *FAST, "--batch-size", "7") == 0
    assert len(results_of(out, "voc21")) == 1
    fast = [a if a != "112" else "224" for a in FAST]  # stride 224
    assert run_eval(*common, *fast) == 0
    assert run_eval(*common, *FAST, "--attention", "q-k") == 0
    assert run_eval(*common, *FAST, "--background", "background") == 0
    runs = results_of(out, "voc21")
    assert len(runs) == 4 and len({r["settings_hash"] for r in runs}) == 4
    assert all(r["complete"] for r in runs)
    by_stride = {r["settings"]["config"]["stride"] for r in runs}
    assert by_stride == {112, 224}
    assert any(r["settings"]["vocabulary"]["classes"][0] == ["background"] for r in runs)


# ------------------------------------------------------------------------------ bad input


def _last_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error message"
    return err[-1]


def test_bad_inputs(tmp_path, tiny_ckpt, capsys):
    common = ["--weights", tiny_ckpt, "--out", tmp_path / "out", *FAST]
    assert run_eval("--dataset", "voc21", "--data-root", tmp_path / "missing", *common) == 2
    line = _last_error_line(capsys)
    assert line.startswith("itaclip eval: error:") and str(tmp_path / "missing") in line

    assert run_eval("--data-root", tmp_path, *common) == 2
    assert "--dataset is required" in _last_error_line(capsys)
    assert run_eval("--dataset", "voc99", "--data-root", tmp_path, *common) == 2
    assert "unknown dataset" in _last_error_line(capsys)

    # Wrong layout: an ADE20K folder given as VOC.
    build_dataset("ade", tmp_path / "ade", n=1)
    assert run_eval("--dataset", "voc21", "--data-root", tmp_path / "ade", *common) == 2
    assert "JPEGImages" in _last_error_line(capsys)

    # A missing label map is named.
    root, stored = build_dataset("cityscapes", tmp_path / "city", n=2)
    key = sorted(stored)[1]
    city, stem = key.split("/")
    victim = root / "gtFine/val" / city / f"{stem}_gtFine_labelTrainIds.png"
    victim.rename(victim.with_suffix(".bak"))
    assert run_eval("--dataset", "cityscapes", "--data-root", root, *common) == 2
    assert str(victim) in _last_error_line(capsys)
    victim.with_suffix(".bak").rename(victim)

    # A label map whose size differs from its image.
    write_label(victim, np.zeros((10, 12), np.uint8))
    assert run_eval("--dataset", "cityscapes", "--data-root", root, *common) == 2
    line = _last_error_line(capsys)
    assert str(victim) in line and "12x10" in line


def test_unreadable_sample_is_skipped_and_counted(tmp_path, tiny_ckpt, capsys):
    root, stored = build_dataset("ade", tmp_path / "data", n=3)
    bad_key = sorted(stored)[1]
    (root / "images/validation" / f"{bad_key}.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out"
    assert (
        run_eval("--dataset", "ade20k", "--data-root", root, "--weights", tiny_ckpt, "--out", out, *FAST) == 1
    )
    captured = capsys.readouterr()
    assert f"skipped {bad_key}" in captured.err and "1 unreadable image(s) skipped" in captured.err
    result = only_result(out, "ade20k")
    assert result["images_evaluated"] == 2 and result["images_skipped"] == 1
    assert result["skipped"][0]["key"] == bad_key and "cannot read image" in result["skipped"][0]["error"]
    assert result["complete"] is True  # every image accounted for
    assert bad_key in (Path(result["run_dir"]) / "results.md").read_text()
    assert "1 skipped" in captured.out


# ------------------------------------------------------------------------------ paper tables


def test_paper_table_rows_beside_paper_figures(tmp_path, tiny_ckpt, capsys):
    build_dataset("voc", tmp_path / "data", n=1)
    out = tmp_path / "out"
    assert (
        run_eval(
            "--paper-table",
            "4",
            "--data-root",
            tmp_path / "data",
            "--weights",
            tiny_ckpt,
            "--out",
            out,
            *FAST,
        )
        == 0
    )
    text = capsys.readouterr().out
    for figure in ("65.0", "65.4", "65.5", "65.6"):
        assert figure in text
    assert "{7, 8, 10}" in text and "| setting | mIoU (ours) | paper |" in text
    runs = results_of(out, "voc21")
    assert len(runs) == 6
    assert {tuple(r["settings"]["config"]["intermediate_layers"]) for r in runs} == {
        (),
        (7,),
        (8,),
        (7, 8),
        (7, 8, 10),
        (7, 8, 9, 10),
    }
    assert all(r["settings"]["config"]["pamr_steps"] == 0 for r in runs)  # row overrides beat --pamr-steps
    table = json.loads((out / "paper_table_4_voc21.json").read_text())
    assert [r["paper"] for r in table["rows"]] == [65.0, 65.4, 65.5, 65.5, 65.6, 65.5]
    # "ours" comes with what produced it: the settings all rows share, then each row's own
    markdown = (out / "paper_table_4_voc21.md").read_text()
    shared = next(line for line in markdown.splitlines() if line.startswith("Settings of ours: "))
    for setting in (f"weights={tiny_ckpt}", "method=itaclip", "stride=112", "short_side=224", "pamr_steps=0",
                    "attention=q-q+k-k", "device=cpu", "cpu_threads="):
        assert setting in shared, shared
    assert "intermediate_layers" not in shared
    assert "- {7, 8, 10}: intermediate_layers=[7, 8, 10]" in markdown, markdown
    assert all(r["weights"] == str(tiny_ckpt) and r["settings"]["config"]["stride"] == 112 for r in table["rows"])


def test_paper_table_11_background_word(tmp_path, tiny_ckpt, capsys):
    root, _ = build_for("coco_object", tmp_path / "data", n=1)
    out = tmp_path / "out"
    assert (
        run_eval(
            "--paper-table",
            "11",
            "--data-root",
            root,
            "--weights",
            tiny_ckpt,
            "--out",
            out,
            "--limit",
            "1",
            *FAST,
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "34.5" in text and "37.7" in text
    backgrounds = sorted(
        len(r["settings"]["vocabulary"]["classes"][0]) for r in results_of(out, "coco_object")
    )
    assert backgrounds == [1, 26]


def test_paper_table_10_local_backbones(tmp_path, tiny_ckpt, capsys):
    build_dataset("voc", tmp_path / "data", n=1)
    out = tmp_path / "out"
    backbones = ["--backbone", f"ViT-L/14={tiny_ckpt}", "--backbone", f"ViT-B/32={tiny_ckpt}"]
    assert (
        run_eval(
            "--paper-table",
            "10",
            "--data-root",
            tmp_path / "data",
            "--weights",
            tiny_ckpt,
            "--out",
            out,
            *backbones,
            *FAST,
        )
        == 0
    )
    text = capsys.readouterr().out
    assert all(f in text for f in ("53.3", "56.7", "67.9"))
    assert len(results_of(out, "voc21")) == 1  # the same checkpoint three times: one run, reused
    assert run_eval("--paper-table", "10", "--data-root", tmp_path / "data", "--backbone", "ViT-B/32") == 2
    assert "NAME=PATH" in _last_error_line(capsys)


def test_paper_table_checks(tmp_path, capsys):
    assert run_eval("--paper-table", "list") == 0
    listing = capsys.readouterr().out
    assert "Table 10" in listing and "67.9" in listing
    assert run_eval("--paper-table", "2", "--dataset", "coco_stuff", "--data-root", tmp_path) == 2
    assert "reports voc21" in _last_error_line(capsys)


def test_convert_coco_object_command(tmp_path, capsys):
    root, stored = build_dataset("coco_stuff", tmp_path, n=2)
    assert run_eval("--convert-coco-object", "--data-root", root, "--no-progress") == 0
    assert "wrote 2 COCO-Object label maps" in capsys.readouterr().err
    assert len(load_dataset("coco_object", root)) == 2
    assert run_eval("--list-datasets") == 0
    assert "coco_object" in capsys.readouterr().out


# ------------------------------------------------------------------------------ torchrun


@pytest.fixture
def real_text():
    """Opt out of the 4-template text encoding (conftest's ``cheap_text_features``)."""


LEAVE_GROUP = """
import os, sys
from itaclip.evaluation.distributed import all_gather_objects, distributed_session

with distributed_session("cpu") as (info, device):
    from itaclip.engine.predictor import Segmenter  # imports open_clip inside the group, as the commands do

    Segmenter(weights=sys.argv[1], device=device)
    all_gather_objects(info.rank, info)
threads = [open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task")]
left = sorted(name for name in threads if "gloo" in name)
with open(os.path.join(sys.argv[2], f"rank{info.rank}.txt"), "w") as report:  # ranks share stdout: lines can interleave
    report.write(f"gloo threads left: {left}")
sys.exit(1 if left else 0)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the thread names from /proc")
def test_leaving_the_group_joins_its_threads(tmp_path, tiny_ckpt):
    """The cause of torchrun runs that aborted after their results were written (SIGABRT, 'terminate
    called without an active exception'): torch.distributed.nn, imported by open_clip inside the
    group, kept the group alive after destroy_process_group(), so gloo's threads outlived main()
    and released a finished collective's tensors while Python shut down. After leaving the group
    no gloo thread may be left."""
    script = tmp_path / "leave_group.py"
    script.write_text(LEAVE_GROUP)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(tiny_ckpt), str(tmp_path)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "gloo threads left: []"


@pytest.mark.timeout(600)  # heavier than the suite's default
def test_torchrun_two_processes_bit_for_bit(tmp_path, tiny_ckpt, real_text):
    build_dataset("voc", tmp_path / "data", n=3)  # odd: uneven shards
    # One name per class keeps the text encoding short (21 × 80 prompts): 20 typed foreground classes
    # and a one-word background set as class 0.
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(f"class {i}" for i in range(1, 21)) + "\n")
    args = [
        "--dataset",
        "voc21",
        "--data-root",
        tmp_path / "data",
        "--weights",
        tiny_ckpt,
        "--classes",
        classes,
        "--background",
        "background",
        *FAST,
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker (OMP_NUM_THREADS=1)
    try:
        assert run_eval(*args, "--out", tmp_path / "one") == 0
    finally:
        torch.set_num_threads(threads)
    single = only_result(tmp_path / "one", "voc21")

    # As the docs write it after the README's install: the environment's torchrun with
    # `-m itaclip.cli`, and the environment not activated (its bin/ not on the PATH).
    venv_torchrun = Path(sys.executable).parent / "torchrun"
    torchrun = [str(venv_torchrun)] if venv_torchrun.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": os.pathsep.join(["/usr/bin", "/bin"])}
    proc = subprocess.run(
        [
            *torchrun,
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "itaclip.cli",
            "eval",
            *map(str, args),
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 processes (gloo)" in proc.stderr
    double = only_result(tmp_path / "two", "voc21")
    assert double["world_size"] == 2 and double["complete"]
    np.testing.assert_array_equal(confusion_of(double), confusion_of(single))
    assert double["mIoU"] == single["mIoU"] and double["per_class"] == single["per_class"]
    assert double["settings_hash"] == single["settings_hash"]
    assert len(list(Path(double["run_dir"]).glob("samples/*.npz"))) == 3
