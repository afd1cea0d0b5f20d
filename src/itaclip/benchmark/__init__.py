"""The speed and memory bench around the engine (``itaclip bench``).

* :mod:`.inputs` — the input sizes (one per benchmark), the modes, synthetic pictures and the
  random ViT-B/16-shaped weights;
* :mod:`.meters` — encoder time and FLOPs, peak memory, the argmax of the similarity maps;
* :mod:`.report` — machine description and the Markdown/JSON report;
* :mod:`.runner` — :func:`~.runner.run_bench`: every input × mode, and the text encoding.

Nothing is imported here, so ``itaclip bench --help`` does not load torch.
"""
