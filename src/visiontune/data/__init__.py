"""data: images from a ``data.source`` to model-ready batches. The download stage
(``download``), which files are images (``folders``), decoding one image (``images``), the
preprocess stage (``preprocess``), the prepared format and its one reader and writer
(``prepared``), a model's view of its images (``model_input``), the batch source
(``batches``), and input statistics (``input_stats``).

May import: config.
"""
