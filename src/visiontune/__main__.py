"""``python -m visiontune`` runs the ``visiontune`` command."""

from visiontune.cli import main

main()
