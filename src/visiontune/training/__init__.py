"""training: fitting a model. The optimizer, schedule and step over a batch source
(``trainer``), epochs with validation and early stopping (``fit``), the train stage's outputs
(``train_stage``), the lr and batch-size finders (``finders``) and ``visiontune profile``
(``profiling``).

May import: models, data, config.
"""
