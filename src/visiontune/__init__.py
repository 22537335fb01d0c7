"""visiontune: image-classification experiments driven by DVC.

One package per concern, in layers (pyproject.toml's import contract, checked by
``lint-imports``): a package may import the ones below it, never one above, and packages on
one line not each other::

    cli, stage                        the visiontune command; the stage scripts' entry point
    tuning                            Optuna studies whose trials are dvc experiments
    experiments | evaluation          dvc experiments, sweep, heatmaps | evaluate, robustness
    training | serving | monitoring   fitting models | the HTTP API | drift checks
    models                            networks, checkpoints, scoring, ONNX
    data                              sources, decoding, preprocess, the prepared format, batches
    config                            params.yaml's schema, paths, errors

Each package's ``__init__`` holds only its docstring: importing a package runs nothing.
"""
