"""registry: model versions and stages in git tags, in GTO's formats (``classifier@v1.2.0``,
``classifier#prod#3``), for the artifact dvc.yaml declares. What a user types to name one
(``references``), the versions and stages GTO reads from the tags (``versions``), and one
version resolved through DVC's artifact API and fetched from a DVC cache or remote, with its
record (``fetch``). The table of versions with their commits' test accuracy and params is
``visiontune registry``, in experiments (``registered_versions``), beside git's file reads.

May import: models, data, config; never training, serving or anything above them.
"""
