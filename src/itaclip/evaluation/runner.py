"""One evaluation, or the rows of a paper table, from plain settings: what ``itaclip eval`` runs
after parsing its flags (and what a script can call the same way).

    with distributed_session("cuda") as (info, device):
        request = EvalRequest(load_dataset("voc21", root), "ViT-B/16", "runs", device=device, info=info)
        result = run_evaluation(request)
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from ..datasets import Dataset, DatasetSpec
from ..engine.errors import ItaclipError
from ..engine.files import atomic_write_text, write_json, writing
from .distributed import DistInfo
from .loop import evaluate
from .paper_tables import PaperRow, PaperTable, format_table
from .report import EvalResult, summary_line

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def dataset_vocabulary(spec: DatasetSpec, classes=None, background=None, aux_texts=None, method=None):
    """The vocabulary for a dataset: the built-in list of ``method``'s preset for it (or
    ``classes``), by the rules of :func:`itaclip.engine.vocabulary.resolve_vocabulary`."""
    from ..engine.methods import get_preset
    from ..engine.vocabulary import resolve_vocabulary

    return resolve_vocabulary(classes, preset=get_preset(spec.preset, method), background=background,
                              aux_texts=aux_texts)


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate and where: a dataset, a model with its settings, a vocabulary source and
    the run options. Every ``torchrun`` rank passes the same request (with its own ``info``)."""

    dataset: Dataset
    weights: str
    out_dir: Union[str, Path]
    """Results folder: each setting gets ``out_dir/<dataset>-<hash>/``."""
    device: Optional[str] = None
    preset: Optional[str] = None
    """Settings preset; None: the dataset's paper preset."""
    overrides: dict = field(default_factory=dict)
    """:class:`~itaclip.engine.config.SegmenterConfig` fields that win over the preset."""
    classes: Union[None, str, Sequence[str]] = None
    """None: the dataset preset's own list (rules of :func:`itaclip.engine.vocabulary.resolve_vocabulary`)."""
    background: Union[None, str, Sequence[str]] = None
    aux_texts: Union[None, str, Sequence[str]] = None
    limit: Optional[int] = None
    restart: bool = False
    progress: bool = True
    info: DistInfo = DistInfo()

    def vocabulary(self, background: Union[None, str, Sequence[str]] = None):
        """The dataset's vocabulary, with ``background`` (else the request's) as class 0."""
        return dataset_vocabulary(self.dataset.spec, self.classes,
                                  self.background if background is None else background, self.aux_texts,
                                  self.overrides.get("method"))

    def segmenter(self, weights: Optional[str] = None):
        from ..engine.predictor import Segmenter

        return Segmenter(
            weights=weights or self.weights,
            preset=self.preset or self.dataset.spec.preset,
            device=self.device,
            **self.overrides,
        )

    def evaluate(self, segmenter, weights: str, title: str, log: Log) -> EvalResult:
        return evaluate(
            self.dataset,
            segmenter,
            self.out_dir,
            weights=weights,
            limit=self.limit,
            info=self.info,
            progress=self.progress,
            restart=self.restart,
            title=title,
            log=log,
        )


def run_evaluation(request: EvalRequest, log: Log = _stderr) -> EvalResult:
    """Evaluate the request's model and vocabulary on its dataset (resumable; see :func:`evaluate`)."""
    segmenter = request.segmenter()
    segmenter.set_vocabulary(request.vocabulary())
    return request.evaluate(segmenter, request.weights, request.dataset.spec.title, log)


@dataclass
class TableRun:
    """The rows of one paper table run on one dataset, and where they were written."""

    table: PaperTable
    dataset: str
    rows: list[dict]
    markdown: str
    markdown_path: Optional[Path] = None
    skipped_any: bool = False


def row_weights(row: PaperRow, weights: str, backbones: dict[str, str]) -> str:
    """The checkpoint of a row: ``weights`` unless the row names another backbone (Table 10), which
    ``backbones`` may map to a local file."""
    if row.weights in (None, "ViT-B/16"):
        return weights
    return backbones.get(row.weights, row.weights)


def paper_texts(request: EvalRequest) -> tuple[EvalRequest, str]:
    """The request a paper-table run uses, and a sentence saying which auxiliary texts: the user's
    choice when given, else the authors' texts for the dataset's list when they can be had (cached
    or downloadable), else the built-in ones."""
    if request.aux_texts is not None or request.classes is not None:
        given = request.aux_texts if isinstance(request.aux_texts, str) else "the texts of the vocabulary given"
        return request, f"as given ({given})"
    from ..auxtexts.authors import texts_for_paper
    from ..engine.methods import get_preset

    choice, said = texts_for_paper(get_preset(request.dataset.spec.preset).classes)
    return (dataclasses.replace(request, aux_texts=choice) if choice else request), said


def run_paper_table(
    request: EvalRequest, table: PaperTable, backbones: Optional[dict[str, str]] = None, log: Log = _stderr
) -> TableRun:
    """Run every row of ``table`` on the request's dataset (the request's overrides first, each
    row's own on top) and write ``paper_table_<N>_<dataset>.md`` / ``.json`` into ``out_dir``
    (rank 0). Rows with the same weights share one loaded model."""
    backbones = backbones or {}
    name = request.dataset.name
    table.check_dataset(name)
    say = log if request.info.is_main else (lambda message: None)
    request, texts_used = paper_texts(request)
    say(f"itaclip eval: auxiliary texts: {texts_used}")
    base_vocab = request.vocabulary()
    if base_vocab.aux_texts is None and table.uses_aux_texts:
        say(f"itaclip eval: warning: no auxiliary texts for {name}: LTG rows equal α = 0")
    loaded = None  # (weights, segmenter) of the previous row
    rows: list[dict] = []
    skipped_any = False
    for number, row in enumerate(table.rows, 1):
        weights = row_weights(row, request.weights, backbones)
        say(f"itaclip eval: Table {table.number} row {number}/{len(table.rows)}: {row.label}")
        if loaded is None or loaded[0] != weights:
            loaded = (weights, request.segmenter(weights))
        segmenter = loaded[1].with_config(**row.overrides) if row.overrides else loaded[1]
        segmenter.set_vocabulary(base_vocab if row.background is None else request.vocabulary(row.background))
        result = request.evaluate(
            segmenter, weights, f"{request.dataset.spec.title} — Table {table.number}: {row.label}", log
        )
        skipped_any |= bool(result.skipped)
        say(summary_line(result))
        rows.append(
            {
                "row": row.label,
                "paper": row.paper.get(name),
                "ours": result.miou,
                "complete": result.complete,
                "images": result.images_evaluated,
                "run_dir": str(result.run_dir),
                "weights": weights,
                "settings": result.settings,
            }
        )
    markdown = format_table(table, name, len(request.dataset), rows, texts_used)
    run = TableRun(table, name, rows, markdown, skipped_any=skipped_any)
    if request.info.is_main:
        out = Path(request.out_dir).expanduser()
        run.markdown_path = out / f"paper_table_{table.number}_{name}.md"
        json_path = run.markdown_path.with_suffix(".json")
        with writing(run.markdown_path, resumable=True):
            atomic_write_text(run.markdown_path, run.markdown)
        with writing(json_path, resumable=True):
            write_json(json_path, {"table": table.number, "title": table.title, "dataset": name,
                                   "auxiliary_texts": texts_used, "rows": rows})
    return run


def run_comparison(request: EvalRequest, methods: Sequence[str], log: Log = _stderr) -> tuple[Path, bool]:
    """Evaluate each method with its own preset and class list for the request's dataset (the
    request's overrides on top), sharing one loaded model; write ``compare_<dataset>.md``/``.json``
    into ``out_dir`` (rank 0). Returns (Markdown path, whether any image was skipped)."""
    from .comparison import compare_methods, write_comparison

    if request.classes is not None or request.background is not None or request.aux_texts is not None \
            or request.preset:
        raise ItaclipError("--compare uses each method's own preset and class list for the dataset: "
                           "leave out --preset, --classes, --background and --aux-texts")
    say = log if request.info.is_main else (lambda message: None)
    skipped_any = False

    def evaluate_one(segmenter, title: str) -> EvalResult:
        nonlocal skipped_any
        result = request.evaluate(segmenter, request.weights, title, log)
        skipped_any |= bool(result.skipped)
        say(summary_line(result))
        return result

    rows = compare_methods(request.dataset, request.segmenter(), methods, evaluate_one, request.overrides,
                           log=lambda message: say(f"itaclip eval: {message}"), weights=request.weights)
    path = Path(request.out_dir).expanduser() / f"compare_{request.dataset.name}.md"
    if request.info.is_main:
        with writing(path, resumable=True):
            path = write_comparison(request.out_dir, request.dataset.name, request.dataset.spec.title, rows,
                                    len(request.dataset))
    return path, skipped_any
