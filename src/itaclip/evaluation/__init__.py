"""The benchmark harness around the engine: mIoU of a segmenter on a dataset, resumable and
``torchrun``-ready, and the paper's tables as data.

* :mod:`.loop` — :func:`~.loop.evaluate`: one result file per image, resume, reduction over
  processes;
* :mod:`.distributed` — rank, device and collectives under ``torchrun``;
* :mod:`.report` — :class:`~.report.EvalResult`, its JSON/Markdown files and the summary line;
* :mod:`.metrics` — confusion matrices, IoU and accuracy (MMSegmentation's definitions);
* :mod:`.paper_tables` — the paper's ablation tables (rows as settings, the paper's figures);
* :mod:`.runner` — one evaluation or a paper table from plain settings (what ``itaclip eval`` calls).

Nothing is imported here, so ``itaclip eval --help`` loads only the table data; torch is imported
when a model is built.
"""
