"""models: networks and trained models. ``model.name`` to a network (``factory``, the CNN
in ``cnn``), what a model is besides its weights (``meta``), the checkpoint (``checkpoint``),
a trained model loaded ready to score (``scoring``), seeds, threads and devices
(``runtime``), penultimate features (``features``), ONNX (``onnx_model``) and
``visiontune export`` (``export``).

May import: data, config.
"""
