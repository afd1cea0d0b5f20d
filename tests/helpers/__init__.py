"""Helpers shared by the test modules (test modules never import each other):

* ``images`` — small synthetic test pictures;
* ``datasets`` — tiny benchmark datasets in MMSegmentation's layouts;
* ``exactness`` — engine vs naive reference, stage by stage;
* ``weights`` — checkpoints in other layouts (transformers, TorchScript);
* ``exports`` — a plain Label Studio RLE decoder;
* ``eval_cli`` — running ``itaclip eval`` and reading its results;
* ``cli`` — ``itaclip segment`` where it must refuse;
* ``servers`` — a local HTTP file server;
* ``tool_envs`` — the annotation tools' own virtual environments (Label Studio, datumaro).
"""
