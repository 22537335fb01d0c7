"""monitoring: is a folder of images from the training distribution? ``visiontune drift``
(``drift``) and its two-sample test (``mmd``).

May import: models, data, config; never training, tuning or experiments.
"""
