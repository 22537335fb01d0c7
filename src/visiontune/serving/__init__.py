"""serving: the HTTP API that classifies uploaded images. The app (``app``), untrusted
uploads (``uploads``), its Prometheus metrics (``metrics``) and the models behind one
interface (``predictors``, a checkpoint or an ONNX export), and where a model came from
(``provenance``); a registered version is resolved and fetched through ``registry``.

May import: registry, models, data, config; never training, tuning or experiments.
"""
