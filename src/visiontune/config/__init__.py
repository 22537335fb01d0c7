"""config: what every other package builds on. params.yaml's schema and validation
(``params``), the tuner's settings in pyproject.toml (``tune_settings``), what
``data.source`` may name (``sources``), the pipeline's paths and where a study lives
(``paths``), the one error type with its one-line reporting (``errors``), the GPUs a
tuner hands a trial's stages (``trial_devices``), the train stage's processes as the
environment tells them (``processes``), and the one writer of plotly pages (``pages``).

May import: nothing of visiontune's.
"""
