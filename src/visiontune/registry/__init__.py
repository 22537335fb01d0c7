"""registry: model versions and stages in git tags, in GTO's formats (``classifier@v1.2.0``,
``classifier#prod#3``), for the artifact dvc.yaml declares. What a user types to name one
(``references``), the versions and stages GTO reads from the tags (``versions``), one version
resolved through DVC's artifact API and fetched from a DVC cache or remote (``fetch``), and
the table of versions with each one's test accuracy and params (``table``).

May import: models, data, config; never training, serving or anything above them.
"""
