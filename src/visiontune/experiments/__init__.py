"""experiments: dvc experiments. Driving dvc and git (``dvc_git``), read-only dvc commands
asked again past DVC's transient queue errors (``dvc_reads``), listing experiments
and reading their files (``listing``), all of them as a pandas DataFrame (``frame``,
never imported by a stage), the sweep stage (``sweep``) and its cell store
(``sweep_cache``, keyed by ``source_closure``), heatmaps (``heatmap``) of the runs they may
compare (``comparable_runs``), ``visiontune report`` (``report``), and ``visiontune
registry`` (``registered_versions``).

May import: the layers below (training, registry, models, data, config); never tuning or
evaluation.
"""
