"""training: fitting a model. A run's parts built once (``parts``), the optimizer and
schedule (``optimization``), the step and epoch over a batch source (``trainer``), epochs
with validation and early stopping (``fit``), the train stage's outputs (``train_stage``),
the processes of ``train.nproc`` (``distributed``, ``sync_batchnorm``, ``launch``), the lr
and batch-size finders (``finders``) and ``visiontune profile`` (``profiling``).

May import: models, data, config.
"""
